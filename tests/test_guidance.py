"""Guidance as Denoiser wrappers: the classifier-guided eps against finite differences, the exact Gaussian-mixture
classifier (s = 1 turns the unconditional oracle into the conditional one; larger s concentrates more), classifier-free
guidance's combination and null label, and label dropout drawn in `draw` (rate, DDP slicing, exact resume)."""

import json

import pytest
import torch

from conftest import tiny_overrides
from difflab.denoiser import DenoiserConfig, ModelDenoiser
from difflab.errors import UserError
from difflab.guidance import (
    ClassifierFreeGuidance,
    ClassifierGuidance,
    MixtureClassifier,
    NetClassifier,
    check_guidance_sampler,
    guided_samplers,
    log_prob_and_grad,
)
from difflab.nets import UNetConfig, build_unet
from difflab.nets.classifier import ClassifierConfig, NoisyClassifierNet
from difflab.oracle import GaussianMixture, GMMOracle, random_diagonal_mixture
from difflab.process import ProcessConfig, build_process
from difflab.samplers import SAMPLERS, select_steps

TINY_CLF = ClassifierConfig(image_size=8, in_channels=1, num_classes=3, model_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                            attention_resolutions=(4,), num_head_channels=8, resblock_updown=False, norm_groups=4)


def _image_oracle(T=50):
    """A 64-d, 3-component diagonal mixture, seen as (B, 1, 8, 8) images."""
    p = build_process(ProcessConfig(T=T))
    return GMMOracle.from_mixture(p, random_diagonal_mixture(d=64, K=3))


def _log_p(classifier, x, t, y):
    return torch.log_softmax(classifier(x, t), -1).gather(1, y[:, None])[:, 0]


# ----- classifier guidance: the formulas ----------------------------------------------------------------------------

def test_classifier_guided_eps_matches_finite_differences():
    """eps_hat = eps - s sqrt(1 - alpha_bar_t) grad log p(y|x_t) (Alg. 2), mean + s Sigma grad (Alg. 1), with the
    gradient of a tiny classifier checked against central finite differences in float64."""
    torch.manual_seed(0)
    oracle = _image_oracle()
    p = oracle.process
    clf = NetClassifier(NoisyClassifierNet(TINY_CLF).double().eval(), p, 3)
    for prm in clf.net.parameters():  # break ADM's zero-initialised output layers, so every block matters
        prm.data.add_(0.2 * torch.randn_like(prm))
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    t, y, s = torch.tensor([7, 31]), torch.tensor([2, 0]), 2.5

    fd = torch.zeros_like(x)
    h = 1e-5
    flat = fd.view(2, -1)
    for i in range(64):
        e = torch.zeros(2, 64, dtype=torch.float64)
        e[:, i] = h
        e = e.view_as(x)
        with torch.no_grad():
            flat[:, i] = (_log_p(clf, x + e, t, y) - _log_p(clf, x - e, t, y)) / (2 * h)
    _, grad = log_prob_and_grad(clf, x, t, y)
    assert fd.abs().max() > 1e-3  # the classifier really depends on x
    assert torch.allclose(grad, fd, atol=1e-7, rtol=1e-5)

    base = oracle(x, t)
    with torch.no_grad():  # samplers run under no_grad: guidance must switch autograd back on itself
        guided = ClassifierGuidance(oracle, clf, s)(x, t, y)
    std = p.std(t).reshape(-1, 1, 1, 1)
    assert torch.allclose(guided.eps, base.eps - s * std * fd, atol=1e-7)
    assert torch.allclose(guided.score, -guided.eps / std, atol=1e-7)
    assert torch.allclose(guided.x0, p.x0_from_eps(x, t, guided.eps), atol=1e-10)
    assert torch.allclose(guided.mean, base.mean + s * base.log_var.exp() * fd, atol=1e-7)
    assert torch.equal(guided.log_var, base.log_var)
    # s = 0 is the wrapped denoiser, untouched
    zero = ClassifierGuidance(oracle, clf, 0.0)(x, t, y)
    assert all(torch.equal(a, b) for a, b in zip(zero, base))


def test_classifier_guidance_passes_labels_only_to_a_conditional_base():
    seen = []

    class Spy:
        def __init__(self, inner):
            self.inner, self.process = inner, inner.process

        def __call__(self, x, t, y=None, s=None):
            seen.append(y)
            return self.inner(x, t, y, s=s)

    oracle = _image_oracle()
    clf = MixtureClassifier(oracle)
    x, y = torch.randn(3, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2])
    ClassifierGuidance(Spy(oracle), clf, 1.0)(x, 10, y)
    ClassifierGuidance(Spy(oracle), clf, 1.0, condition_denoiser=True)(x, 10, y)
    assert seen[0] is None and torch.equal(seen[1], y)
    with pytest.raises(ValueError, match="needs the target labels"):
        ClassifierGuidance(oracle, clf, 1.0)(x, 10)


def test_classifier_on_another_process_is_refused():
    oracle = _image_oracle(T=50)
    other = GMMOracle.from_mixture(build_process(ProcessConfig(T=50, schedule="cosine")), oracle.mixture)
    with pytest.raises(UserError, match="different noise schedule"):
        ClassifierGuidance(oracle, MixtureClassifier(other), 1.0)
    with pytest.raises(UserError, match="T=40"):
        ClassifierGuidance(oracle, MixtureClassifier(_image_oracle(T=40)), 1.0)


# ----- classifier guidance on the Gaussian-mixture oracle: an analytic check without training ----------------------

def _overlapping_mixture():
    """Three overlapping 2-D modes, equal weights: the Bayes classifier is right ~83% of the time on mode 0."""
    means = torch.tensor([[-0.4, 0.0], [0.4, 0.0], [0.0, 0.6]], dtype=torch.float64)
    return GaussianMixture(means, torch.full((3, 2), 0.3**2, dtype=torch.float64), torch.ones(3, dtype=torch.float64))


@pytest.fixture(scope="module")
def mode_setup():
    p = build_process(ProcessConfig(T=1000))
    oracle = GMMOracle.from_mixture(p, _overlapping_mixture())
    return oracle, MixtureClassifier(oracle)


def test_exact_classifier_at_scale_one_gives_the_conditional_model(mode_setup):
    """grad log p_t(x) + grad log p_t(y|x) = grad log p_t(x|y) (Bayes): eps, x0 and score equal the conditional oracle's."""
    oracle, clf = mode_setup
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=g)
    for t in (0, 100, 500, 999):
        guided, cond = ClassifierGuidance(oracle, clf, 1.0)(x, t, y), oracle(x, t, y)
        for name in ("eps", "x0", "score"):
            assert torch.allclose(getattr(guided, name), getattr(cond, name), rtol=1e-6, atol=1e-9), (t, name)


def _on_mode(mixture, x, k=0):
    """(fraction whose Bayes class at t = 0 is k, mean responsibility of k)."""
    r = mixture.responsibilities(x)
    return float((r.argmax(1) == k).double().mean()), float(r[:, k].mean())


@pytest.mark.parametrize("sampler,n_steps", [("ddim", 50), ("ddpm", 200)])
def test_guided_sampling_concentrates_on_the_chosen_mode(mode_setup, sampler, n_steps):
    """s = 0: the mixture (1/3 on mode 0); s = 1: the conditional p(x | y=0); s = 4: more mass on mode 0 than that."""
    oracle, clf = mode_setup
    mix, n = oracle.mixture, 2000
    exact, _ = _on_mode(mix, mix.means[0] + 0.3 * torch.randn(20000, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    steps = select_steps(oracle.process, n_steps, "linspace")
    y = torch.zeros(n, dtype=torch.long)
    frac, resp = {}, {}
    for s in (0.0, 1.0, 2.0, 4.0):
        g = torch.Generator().manual_seed(1)
        x = SAMPLERS[sampler].fn(ClassifierGuidance(oracle, clf, s), torch.randn(n, 2, generator=g, dtype=torch.float64), steps,
                                 y=y, generator=g)
        frac[s], resp[s] = _on_mode(mix, x)
    assert abs(frac[0.0] - 1 / 3) < 0.05, frac
    assert abs(frac[1.0] - exact) < 0.05, (frac, exact)  # ~0.83: the guided chain samples p(x | y)
    assert frac[4.0] > frac[1.0] + 0.1 and frac[4.0] > 0.97, frac
    assert resp[0.0] < resp[1.0] < resp[2.0] < resp[4.0], resp  # sharper p(y|x)^s: more concentration as s grows


@pytest.mark.parametrize("name", sorted(guided_samplers()))
def test_every_guided_sampler_steers_towards_the_class(mode_setup, name):
    """The support table's claim, checked: each listed sampler moves mass onto the chosen mode under guidance."""
    oracle, clf = mode_setup
    spec = SAMPLERS[name]
    steps = select_steps(oracle.process, min(spec.recommended_steps, 50), spec.recommended_spacing)
    opts = {"n_steps_each": 30, "epsilon": 2e-4} if name == "langevin" else {}
    n = 400
    y = torch.full((n,), 2)
    frac = {}
    for s in (0.0, 4.0):
        g = torch.Generator().manual_seed(1)
        x = spec.fn(ClassifierGuidance(oracle, clf, s), torch.randn(n, 2, generator=g, dtype=torch.float64), steps, y=y,
                    generator=g, **opts)
        frac[s] = _on_mode(oracle.mixture, x, k=2)[0]
    assert frac[4.0] > frac[0.0] + 0.3, frac


def test_every_registered_sampler_is_declared_for_guidance():
    """A new sampler must be checked (passes y, reads only Prediction fields) and declared `guided` in the sampler registry."""
    import dataclasses

    assert set(SAMPLERS) == set(guided_samplers())
    SAMPLERS["my-new-sampler"] = dataclasses.replace(SAMPLERS["ddim"], name="my-new-sampler", guided=None)
    try:
        with pytest.raises(UserError, match="cannot take cfg guidance"):
            check_guidance_sampler("my-new-sampler", "cfg")
    finally:
        del SAMPLERS["my-new-sampler"]
    with pytest.raises(UserError, match="cannot take cfg guidance"):
        check_guidance_sampler("my-new-sampler", "cfg")
    check_guidance_sampler("my-new-sampler", "none")
    with pytest.raises(UserError, match="unknown guidance"):
        check_guidance_sampler("ddim", "clf")


# ----- classifier-free guidance ------------------------------------------------------------------------------------

def _tiny_cond_denoiser():
    torch.manual_seed(0)
    cfg = UNetConfig(image_size=8, in_channels=1, out_channels=1, model_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                     attention_resolutions=(4,), num_heads=2, norm_groups=8, num_classes=10, class_dropout_null=True)
    net = build_unet(cfg).double().eval()
    for prm in net.parameters():
        prm.data.add_(0.05 * torch.randn_like(prm))
    return ModelDenoiser(net, build_process(ProcessConfig(T=50)), DenoiserConfig(clip_x0=False))


class Recorder:
    def __init__(self, inner):
        self.inner, self.process, self.calls = inner, inner.process, []

    def __call__(self, x, t, y=None, s=None):
        self.calls.append((x.shape[0], None if y is None else y.clone()))
        return self.inner(x, t, y, s=s)


def test_cfg_with_zero_weight_is_the_conditional_model():
    den = _tiny_cond_denoiser()
    x, y, t = torch.randn(4, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 3, 9, 3]), torch.tensor([3, 20, 41, 49])
    with torch.no_grad():
        guided, cond = ClassifierFreeGuidance(den, 0.0, null_label=10)(x, t, y), den(x, t, y)
    for a, b in zip(guided, cond):
        assert torch.allclose(a, b, atol=1e-10)


def test_cfg_runs_cond_and_null_in_one_batch_and_combines_eps():
    den = _tiny_cond_denoiser()
    rec = Recorder(den)
    x, y, t, w = torch.randn(3, 1, 8, 8, dtype=torch.float64), torch.tensor([1, 5, 7]), torch.tensor([10, 25, 49]), 3.0
    with torch.no_grad():
        guided = ClassifierFreeGuidance(rec, w, null_label=10)(x, t, y)
        cond, uncond = den(x, t, y), den(x, t, torch.full((3,), 10))
    assert len(rec.calls) == 1 and rec.calls[0][0] == 6  # one forward pass over 2B
    assert torch.equal(rec.calls[0][1], torch.tensor([1, 5, 7, 10, 10, 10]))  # [y; null]
    assert torch.allclose(guided.eps, (1 + w) * cond.eps - w * uncond.eps, atol=1e-10)
    p = den.process
    assert torch.allclose(guided.x0, p.x0_from_eps(x, t, guided.eps), atol=1e-10)
    assert torch.allclose(guided.mean, p.posterior_mean(guided.x0, x, t, t - 1), atol=1e-10)
    # the null label is the U-Net's y=None (unconditional) embedding
    with torch.no_grad():
        assert torch.allclose(uncond.eps, den(x, t, None).eps, atol=1e-12)


def test_cfg_on_the_oracle_calls_the_unconditional_model_with_no_label():
    oracle = _image_oracle()
    rec = Recorder(oracle)
    x, y = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 2])
    guided = ClassifierFreeGuidance(rec, 2.0, null_label=None)(x, 5, y)
    assert [c[1] is None for c in rec.calls] == [False, True]
    expected = 3.0 * oracle(x, 5, y).eps - 2.0 * oracle(x, 5).eps
    assert torch.allclose(guided.eps, expected, atol=1e-12)


# ----- label dropout --------------------------------------------------------------------------------------------------

def _task(p_drop):
    from difflab.runs import resolve_config
    from difflab.runs.diffusion.task import DiffusionTask

    cfg = resolve_config("digits", tiny_overrides() + [f"train.label_dropout={p_drop}"])
    return DiffusionTask(cfg, None, build_process(cfg.process), torch.device("cpu"))


def test_label_dropout_rate_and_stream():
    from difflab.training.trainer import step_generator

    task = _task(0.3)
    d = task.draw(step_generator(0, 5), 20000, (1, 8, 8))
    rate = float(d["drop_label"].double().mean())
    assert abs(rate - 0.3) < 0.015, rate
    # a function of (seed, step): the same flips again, and the loss's own draws are those of a run without dropout
    again = task.draw(step_generator(0, 5), 20000, (1, 8, 8))
    assert torch.equal(d["drop_label"], again["drop_label"])
    plain = _task(0.0).draw(step_generator(0, 5), 20000, (1, 8, 8))
    assert "drop_label" not in plain and torch.equal(plain["t"], d["t"]) and torch.equal(plain["eps"], d["eps"])
    # drawn for the global batch: slicing per rank / micro-batch gives each example the flip one process gives it
    small = task.draw(step_generator(0, 5), 8, (1, 8, 8))
    halves = [{k: v[i:i + 4] for k, v in small.items()} for i in (0, 4)]
    assert torch.equal(torch.cat([h["drop_label"] for h in halves]), small["drop_label"])


def test_label_dropout_replaces_labels_by_the_null_label():
    task = _task(0.5)
    from difflab.training.trainer import step_generator

    seen = {}

    class Net(torch.nn.Module):
        def forward(self, x, t, y=None):
            seen["y"] = y
            return torch.zeros_like(x)

    x, y = torch.zeros(64, 1, 8, 8), torch.arange(64) % 10
    d = task.draw(step_generator(1, 0), 64, (1, 8, 8))
    task.loss(Net(), x, y, d)
    drop = d["drop_label"]
    assert 0 < int(drop.sum()) < 64
    assert torch.equal(seen["y"][drop], torch.full((int(drop.sum()),), 10))
    assert torch.equal(seen["y"][~drop], y[~drop])


def test_label_dropout_needs_a_null_label():
    from difflab.runs import resolve_config

    with pytest.raises(UserError, match="class_dropout_null"):
        resolve_config("digits", ["model.class_dropout_null=false", "train.label_dropout=0.1"])
    with pytest.raises(UserError, match=r"\[0, 1\)"):
        resolve_config("digits", ["train.label_dropout=1.0"])
    assert resolve_config("digits-cond").train.label_dropout == 0.1


def test_label_dropout_run_resumes_bit_identically(tmp_path):
    from safetensors.torch import load_file

    from difflab.runs import resolve_config
    from difflab.runs import train_run

    cfg = resolve_config("digits", tiny_overrides(steps=4) + ["train.label_dropout=0.5"])
    train_run(cfg, tmp_path / "a", progress=False)
    train_run(cfg, tmp_path / "b", progress=False, stop_at=2)
    train_run(cfg, tmp_path / "b", progress=False, resume=True)
    a, b = (load_file(str(tmp_path / r / "checkpoints" / "step-4.safetensors")) for r in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    la, lb = ([json.loads(ln)["loss"] for ln in (tmp_path / r / "metrics.jsonl").read_text().splitlines()] for r in "ab")
    assert la == lb
    # and the null label is trained (without dropout its embedding row never receives a gradient)
    early = load_file(str(tmp_path / "a" / "checkpoints" / "step-2.safetensors"))
    assert not torch.equal(a["model.label_emb.weight"][10], early["model.label_emb.weight"][10])
