"""Restoration (issue 4): RePaint, denoising, SDEdit on the Gaussian-mixture oracle; degradations and the conditioning
wrapper; image-conditional training and `difflab inpaint | denoise | img2img | restore` end to end; one-line errors."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import one_line_error, sets, tiny_overrides
from difflab.cli.main import main
from difflab.errors import UserError
from difflab.oracle import GMMOracle, mixture_distance, random_diagonal_mixture, ring_mixture
from difflab.process import VPProcess, linear_betas
from difflab.samplers import ddim, timesteps
from difflab.restoration import (
    ConditionConfig,
    Degradation,
    ImageConditioned,
    denoise,
    jump_schedule,
    make_masks,
    matching_step,
    noisy_to_xt,
    repaint,
    repaint_nfe,
    sdedit,
    strength_step,
)

PROCESS = VPProcess(linear_betas(1000))


@pytest.fixture(scope="module")
def ring():
    return GMMOracle.from_mixture(PROCESS, ring_mixture())


# ----- RePaint ------------------------------------------------------------------------------------------------------

def test_jump_schedule_is_repaints():
    """get_schedule_jump of RePaint: moves of one level, r passes over every stretch of j steps, ends on clean data."""
    s = jump_schedule(5, 2, 3)
    assert s == [4, 3, 2, 3, 4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1, 0, -1]
    for n, j, r in [(50, 10, 10), (20, 3, 2), (7, 10, 5), (10, 1, 1)]:
        s = jump_schedule(n, j, r)
        assert s[0] == n - 1 and s[-1] == -1
        assert all(abs(a - b) == 1 for a, b in zip(s, s[1:]))
        assert repaint_nfe(n, j, r) == sum(b < a for a, b in zip(s, s[1:]))
    assert jump_schedule(6, 10, 10) == [5, 4, 3, 2, 1, 0, -1]  # j >= n: plain replacement
    assert repaint_nfe(50, 10, 1) == 50
    with pytest.raises(UserError):
        jump_schedule(5, 0, 2)


def test_repaint_keeps_the_known_region_exactly():
    mix = random_diagonal_mixture(64, 4)
    orc = GMMOracle.from_mixture(PROCESS, mix)
    g = torch.Generator().manual_seed(0)
    x = mix.sample(6, g).float().reshape(6, 1, 8, 8)
    mask = make_masks("center", 6, 8)
    out = repaint(orc, x, mask, timesteps(1000, 20, "linspace"), jump_length=5, jump_n_sample=2, generator=g)
    keep = mask.expand_as(x) == 1
    assert torch.equal(out[keep], x[keep])
    assert not torch.allclose(out[~keep], x[~keep])
    # the values of x under the hole are never read
    x2 = torch.where(keep, x, torch.full_like(x, 7.0))
    out2 = repaint(orc, x2, mask, timesteps(1000, 20, "linspace"), jump_length=5, jump_n_sample=2, generator=torch.Generator().manual_seed(0))
    out1 = repaint(orc, x, mask, timesteps(1000, 20, "linspace"), jump_length=5, jump_n_sample=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out1, out2)


def _conditional_of_mixture(mix, c: float, known: int = 0):
    """p(x_u | x_known = c) of a 2-D Gaussian mixture: again a mixture, weights w_k N(c; mu_k, C_k,kk), Gaussian regression."""
    u = 1 - known
    c = torch.tensor(c, dtype=torch.float64)
    m1, m2 = mix.means[:, known], mix.means[:, u]
    c11, c22, c12 = mix.covs[:, known, known], mix.covs[:, u, u], mix.covs[:, known, u]
    w = torch.softmax(mix.weights.log() - 0.5 * ((c - m1) ** 2 / c11 + c11.log()), 0)
    return w, m2 + c12 / c11 * (c - m1), (c22 - c12**2 / c11).sqrt()


def _ks(x, w, mu, sd) -> float:
    """Kolmogorov-Smirnov distance of samples x (n,) to the 1-D Gaussian mixture (w, mu, sd)."""
    x = x.double().sort().values
    n = len(x)
    F = (w[None] * 0.5 * (1 + torch.erf((x[:, None] - mu[None]) / (sd[None] * math.sqrt(2))))).sum(1)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum((i / n - F).abs(), (F - (i - 1) / n).abs()).max())


def test_repaint_samples_the_exact_conditional_of_the_mixture(ring):
    """Inpaint y of a 2-D point (x known) on the 8-mode ring: the exact p(y | x = 0.566) is a two-mode mixture (modes at
    45 and -45 degrees, weights 0.375 / 0.625 from the unequal ring weights). RePaint with resampling matches it (KS
    distance near the sampling noise 1.36 / sqrt(n) = 0.03); plain replacement (r = 1) is visibly off, as the paper says."""
    c, n = 0.566, 2000
    w, mu, sd = _conditional_of_mixture(ring.mixture, c)
    up_exact = float(w[mu > 0].sum())
    x = torch.zeros(n, 2)
    x[:, 0] = c
    mask = torch.tensor([[1.0, 0.0]])
    steps = timesteps(1000, 250, "linspace")
    out = repaint(ring, x, mask, steps, jump_length=10, jump_n_sample=10, generator=torch.Generator().manual_seed(1))
    plain = repaint(ring, x, mask, steps, jump_length=10, jump_n_sample=1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out[:, 0], x[:, 0])
    ks, ks_plain = _ks(out[:, 1], w, mu, sd), _ks(plain[:, 1], w, mu, sd)
    assert ks < 0.05, ks
    assert ks_plain > ks + 0.03, (ks_plain, ks)
    assert abs(float((out[:, 1] > 0).double().mean()) - up_exact) < 0.03
    # unconditional draws of y would be spread over the whole ring: the conditional is what was sampled
    assert _ks(ring.sample_data(n, torch.Generator().manual_seed(2))[:, 1].float(), w, mu, sd) > 0.15


# ----- denoising ----------------------------------------------------------------------------------------------------

def test_matching_step_and_exact_forward_draw():
    for sigma in (0.05, 0.3, 1.0, 10.0):
        t = matching_step(PROCESS, sigma)
        assert float(PROCESS.sigma(torch.tensor([t]))[0]) >= sigma
        assert t == 0 or float(PROCESS.sigma(torch.tensor([t - 1]))[0]) < sigma
    # x_t built from y = x0 + sigma_n n has exactly the law of q(x_t | x0): mean a_t x0, std a_t sigma_t
    x0 = torch.full((200_000,), 0.5, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    sn = 0.3
    t = matching_step(PROCESS, sn)
    xt = noisy_to_xt(PROCESS, x0 + sn * torch.randn(x0.shape, generator=g, dtype=torch.float64), sn, t, g)
    a, std = float(PROCESS.a(torch.tensor([t]))[0]), float(PROCESS.std(torch.tensor([t]))[0])
    assert abs(float(xt.mean()) - a * 0.5) < 4 * std / math.sqrt(len(x0))
    assert abs(float(xt.std()) / std - 1) < 0.01
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(UserError, match="noise-sigma"):
            matching_step(PROCESS, bad)
    with pytest.raises(UserError, match="largest noise level"):
        matching_step(PROCESS, 1e6)


@pytest.mark.parametrize("sigma_n", [0.3, 1.0])
def test_denoise_reduces_the_error_on_the_oracle(sigma_n):
    """On a 64-d mixture: the posterior sample and the posterior mean are both far closer to the clean data than the noisy
    input; the sample's MSE is about twice the mean's (E|x - x0|^2 = 2 MMSE for an exact posterior sample)."""
    mix = random_diagonal_mixture(64, 4)
    orc = GMMOracle.from_mixture(PROCESS, mix)
    g = torch.Generator().manual_seed(0)
    x0 = mix.sample(1000, g).float()
    noisy = x0 + sigma_n * torch.randn(x0.shape, generator=g)
    mse = lambda z: float(((z - x0) ** 2).mean())  # noqa: E731
    sample = denoise(orc, noisy, sigma_n, n_steps=50, generator=g)
    mean = denoise(orc, noisy, sigma_n, method="mean", generator=g)
    assert mse(sample) < 0.5 * mse(noisy)
    assert mse(mean) < mse(sample)
    assert 1.6 < mse(sample) / mse(mean) < 2.4
    det = denoise(orc, noisy, sigma_n, sampler=ddim, n_steps=50, generator=g)  # any sampler runs from t
    assert mse(det) < 0.5 * mse(noisy)


# ----- SDEdit -------------------------------------------------------------------------------------------------------

def test_sdedit_strength_zero_keeps_and_one_ignores_the_input(ring):
    g = torch.Generator().manual_seed(0)
    x0 = ring.sample_data(500, g).float()
    assert torch.equal(sdedit(ring, x0, 0.0, generator=g), x0)
    assert strength_step(1000, 0.0) == -1 and strength_step(1000, 1.0) == 999 and strength_step(1000, 0.5) == 499
    n = 4000
    outs = [sdedit(ring, torch.full((n, 2), v), 1.0, n_steps=100, generator=torch.Generator().manual_seed(1)) for v in (2.0, -2.0)]
    for out in outs:  # both are samples of the data, whatever the input
        assert mixture_distance(ring.mixture, out)["kl"] < 0.1
    assert (outs[0].mean(0) - outs[1].mean(0)).abs().max() < 0.05
    # a low strength stays near its input: the outputs of the two inputs are far apart
    near = [sdedit(ring, torch.full((n, 2), v), 0.05, n_steps=20, generator=torch.Generator().manual_seed(1)) for v in (0.5, -0.5)]
    assert (near[0].mean(0) - near[1].mean(0)).abs().min() > 0.5
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(UserError, match="strength"):
            sdedit(ring, x0, bad)


# ----- degradations, masks, the conditioning wrapper ---------------------------------------------------------------

def test_degradation_shapes_and_channels():
    g = torch.Generator().manual_seed(0)
    x1 = torch.rand(5, 1, 8, 8, generator=g) * 2 - 1
    x3 = torch.rand(5, 3, 8, 8, generator=g) * 2 - 1
    sr = Degradation(ConditionConfig(kind="sr", factor=2), 1)
    assert sr.observe(x1).shape == (5, 1, 4, 4) and sr(x1).shape == (5, 1, 8, 8) and sr.channels == 1
    assert torch.allclose(sr(x1)[..., ::2, ::2], torch.nn.functional.avg_pool2d(x1, 2))  # nearest: blocks of the mean
    assert sr.baseline(sr.observe(x1)).shape == x1.shape
    assert Degradation(ConditionConfig(kind="sr", factor=4, upsample="bilinear"), 3)(x3).shape == (5, 3, 8, 8)
    col = Degradation(ConditionConfig(kind="colorize"), 3)
    gray = col(x3)
    assert gray.shape == (5, 1, 8, 8) and col.channels == 1
    assert torch.allclose(gray[:, 0], 0.299 * x3[:, 0] + 0.587 * x3[:, 1] + 0.114 * x3[:, 2])
    assert Degradation(ConditionConfig(kind="colorize", gray_channels=3), 3)(x3).shape == (5, 3, 8, 8)
    assert col.baseline(col.observe(x3)).shape == (5, 3, 8, 8)
    with pytest.raises(UserError, match="colour"):
        Degradation(ConditionConfig(kind="colorize"), 1)
    inp = Degradation(ConditionConfig(kind="inpaint", mask="center"), 3)
    y = inp(x3)
    assert y.shape == (5, 4, 8, 8) and inp.channels == 4
    assert torch.equal(y[:, 3:], make_masks("center", 5, 8)) and float(y[:, :3, 3:5, 3:5].abs().sum()) == 0
    rnd = Degradation(ConditionConfig(kind="inpaint", mask="random"), 1)
    d1, d2 = rnd.draw(torch.Generator().manual_seed(3), 7, (1, 8, 8)), rnd.draw(torch.Generator().manual_seed(3), 7, (1, 8, 8))
    assert d1["cond_mask"].shape == (7, 1, 8, 8) and torch.equal(d1["cond_mask"], d2["cond_mask"])
    assert sr.draw(g, 7, (1, 8, 8)) == {}
    with pytest.raises(UserError, match="factor"):
        Degradation(ConditionConfig(kind="sr", factor=3), 1)(x1)


def test_image_conditioned_concatenates_the_condition():
    seen = {}

    class Net(torch.nn.Module):
        def forward(self, x, t, y=None):
            seen["x"], seen["y"] = x, y
            return x[:, :1]

    cond = torch.randn(4, 2, 8, 8)
    x = torch.randn(4, 1, 8, 8)
    out = ImageConditioned(Net(), cond)(x, torch.zeros(4), torch.arange(4))
    assert torch.equal(seen["x"], torch.cat([x, cond], 1)) and torch.equal(seen["y"], torch.arange(4)) and torch.equal(out, x)
    with pytest.raises(ValueError):
        ImageConditioned(Net(), cond)(torch.randn(3, 1, 8, 8), torch.zeros(3))


def test_masks(tmp_path):
    c, left = make_masks("center", 2, 8), make_masks("left", 2, 8)
    assert c.shape == (2, 1, 8, 8) and int((c == 0).sum()) == 2 * 16 and float(c[0, 0, 3, 3]) == 0 and float(c[0, 0, 0, 0]) == 1
    assert int((left == 0).sum()) == 2 * 32 and float(left[0, 0, 0, 0]) == 0 and float(left[0, 0, 0, 7]) == 1
    r = make_masks("random", 200, 8, torch.Generator().manual_seed(0))
    holes = (r == 0).flatten(1).sum(1)
    assert holes.min() >= 4 and holes.max() <= 64 and len(set(holes.tolist())) > 5
    assert torch.equal(r, make_masks("random", 200, 8, torch.Generator().manual_seed(0)))
    arr = np.full((8, 8), 255, np.uint8)
    arr[:, :3] = 0
    Image.fromarray(arr).save(tmp_path / "m.png")
    m = make_masks(str(tmp_path / "m.png"), 3, 8)
    assert m.shape == (3, 1, 8, 8) and int((m == 0).sum()) == 3 * 24
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(UserError, match="16x16.*8x8"):
        make_masks(str(tmp_path / "big.png"), 1, 8)
    with pytest.raises(UserError, match="does not exist"):
        make_masks(str(tmp_path / "none.png"), 1, 8)


def test_tinted_digits():
    from difflab.data import DataConfig, load_dataset
    from difflab.data.digits import load_digits_split

    test = load_dataset(DataConfig(name="digits-color", split="test"))
    assert test.x.shape == (297, 3, 8, 8) and test.num_classes == 10
    gray, labels = load_digits_split("test")
    assert torch.equal(test.y, labels)
    # the stroke is the digit's intensity times one colour per image: all channels vanish on the background
    assert torch.equal((test.x > -1).any(1), (gray[:, 0] > -1))
    assert torch.equal(load_dataset(DataConfig(name="digits-color", split="test")).x, test.x)  # fixed tints
    rgb = (test.x + 1).amax((2, 3)) / 2  # (N, 3) brightest pixel per channel
    assert float((rgb.amax(1) - rgb.amin(1)).mean()) > 0.3  # coloured, not gray


def test_condition_config_checks_the_channels():
    from difflab.runs import resolve_config

    with pytest.raises(UserError, match="model.in_channels must be 2"):
        resolve_config("digits", ["condition.kind=sr"])
    cfg = resolve_config("digits", ["model.in_channels=3", "condition.kind=inpaint"])
    assert cfg.data_channels == 1
    with pytest.raises(UserError, match="colour"):
        resolve_config("digits", ["model.in_channels=2", "condition.kind=colorize"])
    with pytest.raises(UserError, match="condition.kind"):
        resolve_config("digits", ["condition.kind=deblur"])
    for name, (cin, cout) in {"digits-sr": (2, 1), "digits-color": (4, 3), "digits-inpaint": (3, 1)}.items():
        c = resolve_config(name)
        assert (c.model.in_channels, c.model.out_channels, c.model.num_classes) == (cin, cout, None)


# ----- training and the CLI -----------------------------------------------------------------------------------------

def _cli(args, capsys):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("restore")
    over = tiny_overrides(steps=2) + ["sample.grid_size=9"]
    out = {}
    for name in ("digits", "digits-sr", "digits-color", "digits-inpaint"):
        extra = ["model.class_dropout_null=false", "model.num_classes=null"] if name == "digits" else []
        out[name] = root / name
        assert main(["train", "--config", name, "--out", str(out[name]), "--quiet", *sets(over + extra)]) == 0
    return out


@pytest.mark.parametrize("name,data,kind", [("digits-sr", "digits:test", "sr"), ("digits-color", "digits-color:test", "colorize"),
                                            ("digits-inpaint", "digits:test", "inpaint")])
def test_conditional_training_and_restore(runs, tmp_path, capsys, name, data, kind):
    run = runs[name]
    assert (run / "samples" / "step-2.png").exists()  # the progress grid of [input | sample | target] triples
    code, out, err = _cli(["restore", "--run", run, "--data", data, "--n", 5, "--steps", 3, "--out", tmp_path / "r.png"], capsys)
    assert code == 0, err
    assert f"condition: {kind}" in out and "psnr_baseline" in out
    arr = np.load(tmp_path / "r.npz")
    c = 3 if kind == "colorize" else 1
    assert arr["arr_0"].shape == (5, 8, 8, c) and arr["target"].shape == (5, 8, 8, c) and arr["input"].shape == (5, 8, 8, c)
    assert arr["arr_1"].shape == (5,) and (tmp_path / "r.png").stat().st_size > 0
    if kind == "inpaint":  # known pixels are pasted in
        keep = arr["mask"][..., None].astype(bool)
        assert np.array_equal(np.where(keep, arr["arr_0"], 0), np.where(keep, arr["target"], 0))
    if kind == "colorize":
        assert "color_error" in out


def test_restore_from_an_image_file(runs, tmp_path, capsys):
    Image.fromarray(np.full((4, 4), 200, np.uint8)).save(tmp_path / "low.png")  # sr: the low-resolution image
    code, out, err = _cli(["restore", "--run", runs["digits-sr"], "--image", tmp_path / "low.png", "--n", 3, "--steps", 2,
                           "--out", tmp_path / "o.npz"], capsys)
    assert code == 0, err
    assert np.load(tmp_path / "o.npz")["arr_0"].shape == (3, 8, 8, 1) and (tmp_path / "o.png").exists()
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(tmp_path / "full.png")
    code, _, err = _cli(["restore", "--run", runs["digits-sr"], "--image", tmp_path / "full.png", "--out", tmp_path / "p.png"], capsys)
    assert "4x4" in one_line_error(code, err)


def test_inpaint_denoise_img2img_cli(runs, tmp_path, capsys):
    run = runs["digits"]
    code, out, err = _cli(["inpaint", "--run", run, "--data", "digits:test", "--n", 4, "--steps", 4, "--jump-length", 2, "--jump-n-sample", 2,
                           "--mask", "left", "--out", tmp_path / "i.png"], capsys)
    assert code == 0, err
    assert "NFE per image 6" in out and "psnr_hole" in out
    arr = np.load(tmp_path / "i.npz")
    assert np.array_equal(arr["arr_0"][:, :, 4:], arr["target"][:, :, 4:])  # the known right half is the input
    code, out, err = _cli(["denoise", "--run", run, "--data", "digits:test", "--n", 4, "--noise-sigma", 0.4, "--steps", 3,
                           "--out", tmp_path / "d.png"], capsys)
    assert code == 0 and "start step t =" in out and "psnr_noisy_input" in out, err
    Image.fromarray(np.full((8, 8), 90, np.uint8)).save(tmp_path / "x.png")
    for strength in ("0", "0.6"):
        code, out, err = _cli(["img2img", "--run", run, "--image", tmp_path / "x.png", "--n", 2, "--strength", strength, "--steps", 3,
                               "--out", tmp_path / f"s{strength}.png", "--force"], capsys)
        assert code == 0, err
    arr = np.load(tmp_path / "s0.npz")
    assert np.array_equal(arr["arr_0"], arr["input"]) and arr["arr_0"].shape == (2, 8, 8, 1)


def test_bad_input_gives_one_line_errors(runs, tmp_path, capsys):
    run, cond = runs["digits"], runs["digits-sr"]
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / "m6.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "big.png")
    cases = [
        (["inpaint", "--run", run, "--data", "digits:test", "--mask", tmp_path / "m6.png"], "6x6"),
        (["img2img", "--run", run, "--data", "digits:test", "--strength", 1.5], "strength"),
        (["img2img", "--run", run, "--data", "digits:test", "--strength", -0.2], "strength"),
        (["denoise", "--run", run, "--data", "digits:test", "--noise-sigma", 0], "noise-sigma"),
        (["denoise", "--run", run, "--data", "digits:test", "--noise-sigma", -1], "noise-sigma"),
        (["inpaint", "--run", run, "--image", tmp_path / "rgb.png"], "RGB"),
        (["denoise", "--run", run, "--image", tmp_path / "big.png", "--noise-sigma", 0.2], "16x16"),
        (["restore", "--run", run, "--data", "digits:test"], "image-conditional"),
        (["inpaint", "--run", cond, "--data", "digits:test"], "difflab restore"),
        (["sample", "--run", cond], "difflab restore"),
        (["inpaint", "--run", run, "--data", "digits:test", "--image", tmp_path / "rgb.png"], "exactly one"),
        (["inpaint", "--run", run], "exactly one"),
        (["restore", "--run", cond, "--data", "digits-color:test"], "1x8x8"),
        (["inpaint", "--run", run, "--data", "digits:test", "--class", 3], "--class"),
        (["inpaint", "--run", run, "--data", "digits:test", "--mask", "triangle"], "does not exist"),
        (["img2img", "--run", run, "--data", "digits:test", "--strength", 0.5, "--sampler", "magic"], "ddim"),
    ]
    for args, needle in cases:
        out = tmp_path / "out.png"
        code, _, err = _cli([*args, "--out", out], capsys)
        assert needle in one_line_error(code, err), (args, err)
        assert not out.exists()


def test_random_masks_keep_resume_and_accumulation_exact(tmp_path):
    """Random training masks are drawn in `draw` per global batch: a resumed run and gradient accumulation are exact."""
    from safetensors.torch import load_file

    from difflab.runs import resolve_config
    from difflab.runs import train_run

    def final(run):
        ck = sorted((run / "checkpoints").glob("step-*.safetensors"), key=lambda p: int(p.stem.split("-")[1]))[-1]
        return load_file(str(ck))

    over = tiny_overrides(steps=4) + ["sample.grid_size=9"]
    cfg = resolve_config("digits-inpaint", over)
    train_run(cfg, tmp_path / "a", progress=False)
    train_run(cfg, tmp_path / "b", progress=False, stop_at=2)
    train_run(cfg, tmp_path / "b", progress=False, resume=True)
    a, b = final(tmp_path / "a"), final(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    train_run(resolve_config("digits-inpaint", over + ["train.grad_accum=4"]), tmp_path / "c", progress=False)
    c = final(tmp_path / "c")
    assert all(torch.allclose(a[k], c[k], atol=1e-5) for k in a if k.startswith("model."))
    from difflab.errors import UserError as UE

    with pytest.raises(UE, match="'condition' section differs"):
        train_run(resolve_config("digits-inpaint", over + ["condition.mask=center"]), tmp_path / "a", progress=False, resume=True)
