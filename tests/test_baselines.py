"""Baselines: the VAE's bound against closed forms, the DCGAN's shapes and losses, training through the Trainer
(two optimisers, exact resume), the CLI, and one-line errors."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import distributions as D

from difflab.losses import discriminator_loss, elbo_terms, gaussian_kl_standard, generator_loss, reconstruction_nll
from difflab.pipelines.sample import sample_generator
from difflab.runs import load_run, resolve_config, run_kind, train_run
from difflab.runs.baselines import GANTask
from difflab.cli.main import main
from difflab.errors import UserError
from difflab.nets.dcgan import DCGAN, DCGANConfig
from difflab.nets.vae import VAE, VAEConfig, reparameterize
from conftest import sets

TINY_TRAIN = ["train.steps=4", "train.batch_size=16", "train.log_every=1", "train.checkpoint_every=2", "train.sample_every=0",
              "train.keep_last=0", "sample.grid_size=4"]
TINY_VAE = TINY_TRAIN + ["model.base_channels=8", "model.latent_dim=4", "eval.repeats=1", "train.ema_rate=0.9"]
TINY_GAN = TINY_TRAIN + ["model.g_channels=8", "model.d_channels=8", "model.latent_dim=8"]


def tiny_config(kind: str, steps: int = 4, extra=()):
    over = (TINY_VAE if kind == "vae" else TINY_GAN) + [f"train.steps={steps}", *extra]
    return resolve_config(f"digits-{kind}", over)


def _final(run: Path) -> dict:
    ck = sorted((run / "checkpoints").glob("step-*.safetensors"), key=lambda p: int(p.stem.split("-")[1]))[-1]
    return load_file(str(ck))


# ----- VAE: the bound in closed form -----------------------------------------------------------------------

def test_kl_of_diagonal_gaussians_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, log_var = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)
    ref = D.kl_divergence(D.Normal(mu, (0.5 * log_var).exp()), D.Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1)
    assert torch.allclose(gaussian_kl_standard(mu, log_var), ref, atol=1e-12)
    assert torch.allclose(gaussian_kl_standard(torch.zeros(3, 4), torch.zeros(3, 4)), torch.zeros(3))  # q = p


def test_reconstruction_terms_match_torch_distributions():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    mean = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    log_std = torch.tensor(-0.7, dtype=torch.float64)
    ref = -D.Normal(mean, log_std.exp()).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(reconstruction_nll(x, mean, log_std, "gaussian"), ref, atol=1e-10)
    xb = torch.randint(0, 2, (3, 1, 4, 4), generator=g).double() * 2 - 1  # binary images in {-1, 1}
    logits = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    ref_b = -D.Bernoulli(logits=logits).log_prob((xb + 1) / 2).flatten(1).sum(1)
    assert torch.allclose(reconstruction_nll(xb, logits, log_std, "bernoulli"), ref_b, atol=1e-10)


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_elbo_of_a_tiny_vae_equals_its_closed_form(likelihood):
    """-ELBO/D = (-log p(x|z) + KL(q||p)) / D at z = mu + sigma eps, every term from torch.distributions."""
    torch.manual_seed(0)
    cfg = VAEConfig(image_size=4, in_channels=1, base_channels=4, latent_dim=3, likelihood=likelihood,
                    decoder_std=0.3 if likelihood == "gaussian" else None)
    vae = VAE(cfg).double()
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64) * 2 - 1
    if likelihood == "bernoulli":
        x = (x > 0).double() * 2 - 1  # binary pixels: the Bernoulli likelihood's support
    eps = torch.randn(2, 3, dtype=torch.float64)
    out = vae(x, eps)
    terms = elbo_terms(x, out, likelihood)
    mu, log_var = vae.encode(x)
    z = mu + (0.5 * log_var).exp() * eps
    dec = vae.decode(z)
    q = D.Normal(mu, (0.5 * log_var).exp())
    kl = D.kl_divergence(q, D.Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1)
    if likelihood == "gaussian":
        log_px = D.Normal(dec, 0.3).log_prob(x).flatten(1).sum(1)
    else:
        log_px = D.Bernoulli(logits=dec).log_prob((x + 1) / 2).flatten(1).sum(1)
    assert torch.allclose(terms.rec, -log_px / 16, atol=1e-6)
    assert torch.allclose(terms.kl, kl / 16, atol=1e-6)
    assert torch.allclose(terms.neg_elbo, (kl - log_px) / 16, atol=1e-6)
    # The Monte-Carlo KL agrees with the closed form in expectation: log q(z|x) - log p(z) averaged over many z.
    zs = q.rsample((20000,))
    mc = (q.log_prob(zs) - D.Normal(0.0, 1.0).log_prob(zs)).sum(-1).mean(0)
    assert torch.allclose(mc, kl, atol=0.05)


def test_reparameterisation_gradient_flows():
    mu = torch.tensor([0.5, -1.0], requires_grad=True)
    log_var = torch.tensor([0.2, -0.4], requires_grad=True)
    eps = torch.tensor([1.5, -0.3])
    z = reparameterize(mu, log_var, eps)
    z.sum().backward()
    assert torch.allclose(mu.grad, torch.ones(2))
    assert torch.allclose(log_var.grad, 0.5 * (0.5 * log_var.detach()).exp() * eps)
    # Through a whole VAE: the bound's gradient reaches the encoder (via z) and the learned decoder std.
    torch.manual_seed(0)
    vae = VAE(VAEConfig(image_size=8, base_channels=4, latent_dim=2))
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    terms = elbo_terms(x, vae(x, torch.randn(4, 2)), "gaussian")
    terms.rec.mean().backward()  # the reconstruction term alone depends on the encoder only through z
    assert vae.encoder[0].weight.grad.abs().sum() > 0
    assert vae.log_std.grad is not None and vae.log_std.grad.abs() > 0


@pytest.mark.parametrize("size,levels", [(4, 0), (8, 1), (16, 2), (32, 3)])
def test_vae_shapes_scale_with_image_size(size, levels):
    cfg = VAEConfig(image_size=size, in_channels=3, base_channels=4, latent_dim=5)
    vae = VAE(cfg)
    assert cfg.levels == levels
    out = vae(torch.zeros(2, 3, size, size), torch.zeros(2, 5))
    assert out.decoded.shape == (2, 3, size, size) and out.mu.shape == (2, 5) and out.log_var.shape == (2, 5)
    assert sum(isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2) for m in vae.encoder) == levels
    assert vae.sample(torch.randn(3, 5)).abs().max() <= 1


# ----- DCGAN ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_dcgan_shapes_scale_with_image_size(size):
    cfg = DCGANConfig(image_size=size, in_channels=3, latent_dim=10, g_channels=4, d_channels=4)
    gan = DCGAN(cfg)
    levels = int(math.log2(size // 4))
    assert cfg.levels == levels
    x = gan.generator(torch.randn(2, 10))
    assert x.shape == (2, 3, size, size) and x.abs().max() <= 1  # Tanh output
    assert gan.discriminator(x).shape == (2,)
    g_strided = [m for m in gan.generator.modules() if isinstance(m, torch.nn.ConvTranspose2d) and m.stride == (2, 2)]
    d_strided = [m for m in gan.discriminator.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert len(g_strided) == len(d_strided) == levels
    # Widths double towards the small end: 64 -> ngf*8 at 4x4 (Radford et al. Fig. 1).
    first = next(m for m in gan.generator.modules() if isinstance(m, torch.nn.ConvTranspose2d))
    assert first.out_channels == 4 * 2 ** (levels - 1) and first.kernel_size == (4, 4)
    # Batch norm everywhere except G's output and D's input layer; LeakyReLU(0.2) in D; no pooling.
    d_layers = list(gan.discriminator.net)
    assert isinstance(d_layers[1], torch.nn.LeakyReLU) and d_layers[1].negative_slope == 0.2
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in gan.discriminator.modules()) == levels - 1
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in gan.generator.modules()) == levels
    assert not any(isinstance(m, (torch.nn.MaxPool2d, torch.nn.AvgPool2d)) for m in gan.modules())


def test_dcgan_config_errors_are_one_line():
    with pytest.raises(UserError, match="start_size"):
        DCGANConfig(image_size=24, start_size=4)
    with pytest.raises(UserError, match="power of two"):
        VAEConfig(image_size=12)


def test_gan_losses_are_the_non_saturating_ones():
    real, fake = torch.tensor([2.0, -1.0, 0.3]), torch.tensor([-3.0, 0.5, 4.0])
    assert torch.allclose(discriminator_loss(real, fake), -torch.log(torch.sigmoid(real)) - torch.log(1 - torch.sigmoid(fake)), atol=1e-6)
    assert torch.allclose(generator_loss(fake), -torch.log(torch.sigmoid(fake)), atol=1e-6)
    # Early in training D rejects the fakes (logit -> -inf): the saturating log(1 - D(G(z))) has no gradient left,
    # the non-saturating -log D(G(z)) keeps a gradient of magnitude ~1 (Goodfellow et al. 2014, Sec. 3).
    logit = torch.tensor(-10.0, requires_grad=True)
    generator_loss(logit).backward()
    assert abs(float(logit.grad) + 1) < 1e-3
    sat = torch.tensor(-10.0, requires_grad=True)
    torch.log(1 - torch.sigmoid(sat)).backward()
    assert abs(float(sat.grad)) < 1e-3


def test_gan_task_phases_update_their_own_network():
    """The D phase changes only D's weights, the G phase only G's (one Adam each)."""
    torch.manual_seed(0)
    cfg = DCGANConfig(image_size=8, in_channels=1, latent_dim=4, g_channels=4, d_channels=4)
    gan, task = DCGAN(cfg), GANTask(cfg)
    draws = task.draw(torch.Generator().manual_seed(0), 6, (1, 8, 8))
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    loss_d, extra = task.loss(gan, x, None, draws, phase="d")
    loss_d.mean().backward()
    assert all(p.grad is None for p in gan.generator.parameters())  # G(z) is detached in D's step
    assert all(p.grad is not None for p in gan.discriminator.parameters())
    assert {"d_real", "d_fake"} <= extra.keys()
    gan.zero_grad(set_to_none=True)
    loss_g, _ = task.loss(gan, x, None, draws, phase="g")
    assert torch.allclose(loss_g, generator_loss(gan.discriminator(gan.generator(draws["z"]))))
    with pytest.raises(ValueError):
        task.loss(gan, x, None, draws, phase="x")


# ----- training through the Trainer ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["vae", "dcgan"])
def test_trains_checkpoints_and_resumes_bit_identically(tmp_path, kind):
    cfg = tiny_config(kind, steps=4)
    train_run(cfg, tmp_path / "a", progress=False)
    train_run(cfg, tmp_path / "b", progress=False, stop_at=2)
    train_run(cfg, tmp_path / "b", progress=False, resume=True)
    a, b = _final(tmp_path / "a"), _final(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    la = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]
    if kind == "dcgan":
        assert {"loss_d", "loss_g", "grad_norm_d", "grad_norm_g", "d_real", "d_fake"} <= rows[0].keys()
        assert any(k.startswith("optim_d.") for k in a) and any(k.startswith("optim_g.") for k in a)
        assert not any(k.startswith("optim.") for k in a)
    else:
        assert {"rec", "kl", "elbo_per_dim", "decoder_std"} <= rows[0].keys()
        assert rows[0]["loss"] == pytest.approx(rows[0]["rec"] + rows[0]["kl"], rel=1e-6)  # beta = 1
        elbo = json.loads((tmp_path / "a" / "elbo.json").read_text())
        assert elbo["split"] == "test" and elbo["n"] == 297 and math.isfinite(elbo["elbo_per_dim"]) and elbo["nll_bound_bpd"] > 0
    assert (tmp_path / "a" / "plots" / "loss.png").stat().st_size > 0
    assert (tmp_path / "a" / "samples" / "step-4.png").exists()


def test_gan_steps_change_both_networks(tmp_path):
    cfg = tiny_config("dcgan", steps=2, extra=["train.checkpoint_every=1"])
    train_run(cfg, tmp_path / "g", progress=False)
    one = load_file(str(tmp_path / "g" / "checkpoints" / "step-1.safetensors"))
    two = load_file(str(tmp_path / "g" / "checkpoints" / "step-2.safetensors"))
    for net in ("generator", "discriminator"):
        key = next(k for k in one if k.startswith(f"model.{net}.") and k.endswith("weight"))
        assert not torch.equal(one[key], two[key]), key


def test_resume_refuses_a_changed_model(tmp_path):
    train_run(tiny_config("vae", steps=2), tmp_path / "r", progress=False)
    with pytest.raises(UserError, match="'model' section differs"):
        train_run(tiny_config("vae", steps=2, extra=["model.latent_dim=5"]), tmp_path / "r", progress=False, resume=True)


def test_sample_baseline_and_load(tmp_path):
    for kind in ("vae", "dcgan"):
        run = train_run(tiny_config(kind, steps=2), tmp_path / kind, progress=False)
        assert run_kind(run) == kind and run_kind(run / "checkpoints" / "step-2.safetensors") == kind
        loaded = load_run(run, kind=("vae", "dcgan"))
        assert loaded.kind == kind and loaded.step == 2 and not loaded.model.training
        a = sample_generator(load_run(run), 5, torch.Generator().manual_seed(3), batch_size=2)
        b = sample_generator(loaded, 5, torch.Generator().manual_seed(3), batch_size=2)
        c = sample_generator(loaded, 5, torch.Generator().manual_seed(4), batch_size=2)
        assert a.shape == (5, 1, 8, 8) and a.abs().max() <= 1 and torch.equal(a, b) and not torch.equal(a, c)
    assert run_kind(tmp_path / "nope") is None


def test_time_budget_stops_training_with_a_checkpoint(tmp_path):
    """Trainer.fit(budget_seconds=...) stops after the step that crosses the budget, checkpoints and logs it."""
    ticks = iter(range(1000))
    from difflab.data import load_dataset
    from difflab.runs import kind_of_config
    from difflab.training.trainer import RunPaths, Trainer

    cfg = tiny_config("vae", steps=50)
    torch.manual_seed(0)
    x = load_dataset(cfg.data).x
    kind = kind_of_config(cfg)
    model = kind.build_model(cfg)
    trainer = Trainer(model, kind.build_task(cfg, model, torch.device("cpu")), x, None, cfg.train, RunPaths(tmp_path),
                      torch.device("cpu"), progress=False)
    trainer.fit(budget_seconds=2.5, clock=lambda: float(next(ticks)))  # one tick per call: 3 steps cross 2.5
    assert trainer.step == 3 and trainer.stopped_by_budget
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3 and rows[-1]["budget_stop"] is True
    assert (tmp_path / "checkpoints" / "step-3.json").exists()


# ----- CLI ----------------------------------------------------------------------------------------------------

def test_cli_train_digits_vae_and_dcgan(tmp_path, capsys):
    for kind, over in (("vae", TINY_VAE), ("dcgan", TINY_GAN)):
        out = tmp_path / kind
        assert main(["train", "--config", f"digits-{kind}", "--out", str(out), "--quiet", *sets(over)]) == 0
        saved = json.loads((out / "config.json").read_text())
        assert saved["kind"] == kind and saved["train"]["steps"] == 4
        # --resume without --config finds the run's own kind
        assert main(["train", "--out", str(out), "--resume", "--quiet", "--set", "train.steps=5"]) == 0
        assert json.loads((out / "checkpoints" / "step-5.json").read_text())["kind"] == kind
        # a baseline config file works as --config too
        assert main(["train", "--config", str(out / "config.json"), "--out", str(tmp_path / f"{kind}2"), "--quiet", "--set", "train.steps=1"]) == 0
    capsys.readouterr()


def test_cli_sample_from_a_baseline_run(tmp_path, capsys):
    out = tmp_path / "vae"
    assert main(["train", "--config", "digits-vae", "--out", str(out), "--quiet", *sets(TINY_VAE)]) == 0
    assert main(["sample", "--run", str(out), "--n", "6", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    assert main(["sample", "--run", str(out), "--n", "6", "--out", str(tmp_path / "s.npz")]) == 0
    import numpy as np

    assert np.load(tmp_path / "s.npz")["arr_0"].shape == (6, 8, 8, 1)


@pytest.mark.parametrize("args,needle", [
    (["--config", "digits-vae", "--set", "model.likelihood=poisson"], "'gaussian', 'bernoulli'"),
    (["--config", "digits-vae", "--set", "kind=dcgan"], "kind"),
    (["--config", "digits-dcgan", "--set", "model.image_size=16"], "model.image_size"),
    (["--config", "digits-dcgan", "--set", "model.start_size=3"], "start_size"),
    (["--config", "digits-vae", "--set", "train.label_dropout=0.1"], "label_dropout"),
    (["--config", "digits-vae", "--set", "model.beta=0"], "beta"),
])
def test_bad_input_is_a_one_line_error(tmp_path, capsys, args, needle):
    code = main(["train", "--out", str(tmp_path / "r"), "--quiet", *args])
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_loading_the_wrong_kind_is_an_error(tmp_path):
    from difflab.runs import resolve_config
    from difflab.runs import train_run
    from conftest import tiny_overrides

    diff = train_run(resolve_config("digits", tiny_overrides(steps=1)), tmp_path / "d", progress=False)
    with pytest.raises(UserError, match="is a diffusion run, not a vae or dcgan run"):
        load_run(diff, kind=("vae", "dcgan"))
    assert run_kind(diff) == "diffusion"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["vae", "dcgan"])
def test_ddp_two_processes(tmp_path, kind):
    """torchrun, 2 CPU ranks train the same weights as 1 process: the VAE, and the DCGAN's two phases, whose batch norm
    all-reduces its statistics over the ranks (difflab.nets.norm.BatchNorm2d), so the running statistics match too."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    over = (TINY_VAE if kind == "vae" else TINY_GAN) + ["train.steps=3"]
    train_run(resolve_config(f"digits-{kind}", over), tmp_path / "one", progress=False)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1", f"--master_port={port}",
           "--master_addr=127.0.0.1", "-m", "difflab.cli.main", "train", "--config", f"digits-{kind}", "--out", str(tmp_path / "two"), "--quiet"]
    for o in over:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _final(tmp_path / "one"), _final(tmp_path / "two")
    assert a.keys() == b.keys()
    for k in a:
        if k.startswith(("model.", "ema.")):  # incl. the DCGAN's running_mean / running_var / num_batches_tracked
            assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
    rows = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(math.isfinite(r["loss"]) for r in rows)


@pytest.mark.parametrize("kind", ["vae", "dcgan"])
def test_config_and_model_commands_know_the_baselines(tmp_path, capsys, kind):
    """`difflab config` resolves a baseline preset with overrides (and documents its own keys); `difflab model` counts its parameters."""
    from difflab.runs import kind_of_config
    from conftest import cli, one_line_error

    code, out, err = cli(["config", f"digits-{kind}", "--set", "train.steps=7", "--set", "model.latent_dim=3"], capsys)
    assert code == 0, err
    cfg = json.loads(out)
    assert cfg["kind"] == kind and cfg["train"]["steps"] == 7 and cfg["model"]["latent_dim"] == 3
    code, out, err = cli(["config", f"digits-{kind}", "--keys"], capsys)
    keys = {ln.split(" = ")[0] for ln in out.splitlines() if " = " in ln and not ln.startswith(" ")}
    assert code == 0 and {"kind", "model.latent_dim", "train.steps"} <= keys and "process.schedule" not in keys

    code, out, err = cli(["model", f"digits-{kind}"], capsys)
    cfg = resolve_config(f"digits-{kind}")
    model = kind_of_config(cfg).build_model(cfg)
    assert code == 0 and f"parameters: {sum(p.numel() for p in model.parameters()):,}" in out, out
    parts = ("encoder", "decoder") if kind == "vae" else ("generator", "discriminator")
    for name in parts:
        n = sum(p.numel() for p in getattr(model, name).parameters())
        assert any(ln.split()[0] == name and f"{n:,}" in ln for ln in out.splitlines()), out

    # A saved run folder resolves too; a bad override is a one-line error.
    run = train_run(tiny_config(kind, steps=1), tmp_path / "run", progress=False)
    code, out, err = cli(["config", str(run)], capsys)
    assert code == 0 and json.loads(out)["model"]["latent_dim"] == tiny_config(kind).model.latent_dim
    code, out, err = cli(["config", f"digits-{kind}", "--set", "model.latent_dim=0"], capsys)
    assert "latent_dim" in one_line_error(code, err)
