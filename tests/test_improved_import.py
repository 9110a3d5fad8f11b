"""`difflab import improved-diffusion`: improved DDPM checkpoints (Nichol & Dhariwal 2021) become run folders whose
network sees exactly the time input improved-diffusion gave it (t * 1000 / T with --rescale_timesteps True, also
under respacing), that sample and evaluate; bad inputs are one-line UserErrors.

Reference: guided-diffusion's code (the test-only guided_diffusion_sdk). Its `UNetModel` with num_head_channels=-1,
resblock_updown=False and use_new_attention_order=False is improved-diffusion's `UNetModel` (same modules, names and
legacy attention), and its respace.py / `_WrappedModel` and beta schedules are improved-diffusion's, line for line.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    from guided_diffusion import gaussian_diffusion as gd
    from guided_diffusion import respace
    from guided_diffusion import unet as gd_unet

import difflab.nets.unet as dl_unet
from difflab.denoiser import ModelDenoiser
from difflab.losses import bits_per_dim
from difflab.process import ProcessConfig, build_process
from difflab.samplers import get_sampler
from difflab.interop.guided_diffusion import RELEASES, state_shapes
from difflab.interop.improved_diffusion import IMPROVED_PRESETS, IMPROVED_RELEASES, improved_run_config
from difflab.runs import load_run

T = 4000  # the CIFAR-10 and ImageNet-64 releases: --diffusion_steps 4000, rescale_timesteps True (the default)
# improved-diffusion's CIFAR-10 options on a small network: 4 heads (its default), AdaGN, learned sigmas, 2 -> 6 channels.
ID_MODEL = dict(image_size=16, in_channels=3, model_channels=32, out_channels=6, num_res_blocks=1, attention_resolutions=(2,),
                channel_mult=(1, 2), num_heads=4, num_heads_upsample=2, use_scale_shift_norm=True)
SETS = ["model.image_size=16", "model.model_channels=32", "model.channel_mult=[1,2]", "model.num_res_blocks=1",
        "model.attention_resolutions=[8]", "model.num_heads_upsample=2", "model.dropout=0.0"]


def _perturb(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter replaced by seeded noise (released nets have no zero-initialised layers left)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (1 / math.sqrt(p[0].numel()) if p.ndim > 1 else 0.5))
    return module.eval()


def _cli(*args) -> int:
    from difflab.cli.main import main

    return main(["import", "improved-diffusion", *map(str, args)])


def _sets(items) -> list[str]:
    return [a for s in items for a in ("--set", s)]


@pytest.fixture(scope="module")
def id_model():
    torch.manual_seed(0)
    return _perturb(gd_unet.UNetModel(**ID_MODEL), seed=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory, id_model):
    """The small model saved as improved-diffusion's train_util does (torch.save of the state dict) under a release name."""
    tmp = tmp_path_factory.mktemp("improved")
    pt = tmp / "cifar10_uncond_50M_500K.pt"
    torch.save(id_model.state_dict(), pt)
    assert _cli("--checkpoint", pt, "--out", tmp / "run", *_sets(SETS)) == 0
    return load_run(tmp / "run")


def test_rescaled_timesteps_give_improved_diffusions_outputs(run, id_model):
    cfg = run.cfg
    assert (cfg.process.schedule, cfg.process.T, cfg.model.timestep_scale) == ("cosine", T, 0.25)
    assert (cfg.denoiser.parameterization, cfg.denoiser.var_type) == ("eps", "learned_range")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 3, 16, 16, generator=g)
    t = torch.tensor([0, 1, 1234, 2001, T - 1])
    with torch.no_grad():
        ref = id_model(x, t.float() * (1000.0 / T))  # improved-diffusion's _scale_timesteps, from its definition
        eps, v = run.denoiser.raw(x, t)
        unscaled = id_model(x, t)
    torch.testing.assert_close(eps, ref[:, :3], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v, ref[:, 3:], rtol=1e-5, atol=1e-5)
    # The comparison can fail: the same network at the unscaled step gives a different output (t > 0).
    assert (unscaled[1:, :3] - eps[1:]).abs().amax() > 1e-2

    # The continuous-sigma evaluation (ODE samplers and likelihoods) lands on the same outputs on the grid.
    p = run.denoiser.process
    den = ModelDenoiser(run.model, p, run.cfg.denoiser, clip_x0=False)
    k = torch.tensor([1, 2, 3])
    with torch.no_grad():
        _, eps_sigma = den.at_sigma(x[k] / p.a(t[k]).float().reshape(-1, 1, 1, 1), p.sigma(t[k]))
    torch.testing.assert_close(eps_sigma, ref[k, :3], rtol=1e-4, atol=1e-4)


def test_respaced_sampling_feeds_the_network_improved_diffusions_times(run, id_model, monkeypatch):
    """50 respaced DDIM steps: the network sees (original step) * 1000 / T at every step, and the samples are
    improved-diffusion's (SpacedDiffusion(rescale_timesteps=True).ddim_sample_loop on the same network)."""
    use = sorted(respace.space_timesteps(T, "50"))  # improved-diffusion's --timestep_respacing 50
    expected = torch.tensor([s * 1000.0 / T for s in reversed(use)], dtype=torch.float32)  # its rule, from the definition

    seen: list[torch.Tensor] = []
    real = dl_unet.timestep_embedding
    monkeypatch.setattr(dl_unet, "timestep_embedding", lambda t, *a, **k: (seen.append(t[0].detach().clone()), real(t, *a, **k))[1])
    x_T = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = get_sampler("ddim").fn(run.denoiser, x_T, use[::-1], eta=0.0)
    assert torch.equal(torch.stack(seen), expected)

    ref_seen: list[torch.Tensor] = []
    hook = id_model.register_forward_pre_hook(lambda m, args: ref_seen.append(args[1][0].detach().clone()))
    try:
        diffusion = respace.SpacedDiffusion(use_timesteps=use, betas=gd.get_named_beta_schedule("cosine", T),
                                            model_mean_type=gd.ModelMeanType.EPSILON, model_var_type=gd.ModelVarType.LEARNED_RANGE,
                                            loss_type=gd.LossType.MSE, rescale_timesteps=True)
        with torch.no_grad():
            ref = diffusion.ddim_sample_loop(id_model, x_T.shape, noise=x_T.clone(), clip_denoised=True, eta=0.0)
    finally:
        hook.remove()
    assert torch.equal(torch.stack(ref_seen), expected)
    torch.testing.assert_close(ours.float(), ref, rtol=1e-3, atol=1e-3)


def test_imported_run_samples_and_gives_finite_bits_per_dim(tmp_path, id_model):
    """A run imported with --set process.T=40 keeps the 1000 / T rule (timestep_scale 25), samples, and has a finite bound."""
    pt = tmp_path / "my_model.pt"
    torch.save(id_model.state_dict(), pt)
    assert _cli("--checkpoint", pt, "--preset", "iddpm-cifar10", "--out", tmp_path / "run", *_sets([*SETS, "process.T=40", "sample.steps=10"])) == 0
    run = load_run(tmp_path / "run")
    assert (run.cfg.process.T, run.cfg.model.timestep_scale) == (40, 25.0)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        x0 = get_sampler("ddpm").fn(run.denoiser, torch.randn(2, 3, 16, 16, generator=g), [39, 26, 13, 0], generator=g)
        assert x0.shape == (2, 3, 16, 16) and torch.isfinite(x0).all()
        images = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
        res = bits_per_dim(run.denoiser, images, generator=g)
    assert math.isfinite(res["total_bpd"]) and res["total_bpd"] > 0


def test_bad_imports_are_one_line_errors(tmp_path, id_model, capsys):
    from conftest import one_line_error

    pt = tmp_path / "model.pt"
    torch.save(id_model.state_dict(), pt)
    msg = one_line_error(_cli("--checkpoint", pt, "--out", tmp_path / "a"), capsys.readouterr().err)
    assert "not a released improved-diffusion file name" in msg and "--preset" in msg

    msg = one_line_error(_cli("--checkpoint", pt, "--preset", "iddpm-cifar10", "--out", tmp_path / "b",
                              *_sets([*SETS, "model.model_channels=64"])), capsys.readouterr().err)
    assert "shape mismatch" in msg and "time_embed.0.weight [128, 32] vs [256, 64]" in msg

    msg = one_line_error(_cli("--checkpoint", pt, "--preset", "iddpm-cifar10", "--out", tmp_path / "c",
                              *_sets([*SETS, "model.num_res_blocks=2"])), capsys.readouterr().err)
    assert "missing key" in msg and "input_blocks.2." in msg

    msg = one_line_error(_cli("--checkpoint", pt, "--preset", "iddpm-cifar100", "--out", tmp_path / "d"), capsys.readouterr().err)
    assert "unknown improved-diffusion preset" in msg and "iddpm-cifar10" in msg

    guided = tmp_path / "64x64_diffusion.pt"
    guided.write_bytes(pt.read_bytes())
    msg = one_line_error(_cli("--checkpoint", guided, "--out", tmp_path / "e"), capsys.readouterr().err)
    assert "difflab import guided-diffusion" in msg
    assert not any((tmp_path / d).exists() for d in "abcde")


# improved-diffusion's script_util.create_model, transcribed: the UNetModel arguments of its flags.
def _create_model_kwargs(f) -> dict:
    mult = {256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4), 32: (1, 2, 2, 2)}[f.image_size]
    return dict(image_size=f.image_size, in_channels=3, model_channels=f.num_channels, out_channels=6 if f.learn_sigma else 3,
                num_res_blocks=f.num_res_blocks, attention_resolutions=tuple(f.image_size // int(r) for r in f.attention_resolutions.split(",")),
                dropout=f.dropout, channel_mult=mult, num_classes=1000 if f.class_cond else None, num_heads=f.num_heads,
                num_heads_upsample=f.num_heads_upsample, use_scale_shift_norm=f.use_scale_shift_norm)


@pytest.mark.parametrize("preset", ["iddpm-cifar10", "iddpm-imagenet64", "iddpm-imagenet64-cond", "iddpm-lsun256"])
def test_release_presets_have_the_released_networks_keys_and_shapes(preset):
    flags = IMPROVED_PRESETS[preset]
    with torch.device("meta"):
        ref = {k: tuple(v.shape) for k, v in gd_unet.UNetModel(**_create_model_kwargs(flags)).state_dict().items()}
    cfg = improved_run_config(flags)
    assert state_shapes("model", cfg.model) == ref
    # The process: improved-diffusion's beta schedule at its T (cosine at T = 4000 clips beta at 0.999 like T = 1000).
    ours = build_process(ProcessConfig(schedule=flags.noise_schedule, T=flags.diffusion_steps)).betas
    torch.testing.assert_close(ours, torch.from_numpy(gd.get_named_beta_schedule(flags.noise_schedule, flags.diffusion_steps)), rtol=1e-12, atol=1e-15)
    assert cfg.model.timestep_scale == (1000 / flags.diffusion_steps if flags.rescale_timesteps else 1.0)


def test_release_table_names_presets_and_is_disjoint_from_guided_diffusions():
    assert set(IMPROVED_RELEASES.values()) <= set(IMPROVED_PRESETS)
    assert not set(IMPROVED_RELEASES) & set(RELEASES)
