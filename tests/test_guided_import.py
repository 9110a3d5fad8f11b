"""`difflab import guided-diffusion`: a guided-diffusion state dict becomes a run folder that load_run
and the samplers accept, with the network's outputs unchanged; bad inputs are one-line UserErrors.

The checkpoints are small guided-diffusion models (the test-only reference, guided_diffusion_sdk) saved with
torch.save, exactly as guided-diffusion's train_util saves its .pt files.
"""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    from guided_diffusion import gaussian_diffusion as gd
    from guided_diffusion import unet as gd_unet

from difflab.errors import UserError
from difflab.samplers import ddim, ddpm
from difflab.interop.guided_diffusion import RELEASES, import_guided_checkpoint, import_run_config
from difflab.runs import load_run

# A small class-conditional ADM model with learned sigmas (the 64x64 release's options) and its difflab --set items.
GD_MODEL = dict(image_size=16, in_channels=3, model_channels=32, out_channels=6, num_res_blocks=1, attention_resolutions=(2,),
                channel_mult=(1, 2), num_classes=10, num_head_channels=32, use_scale_shift_norm=True, resblock_updown=True,
                use_new_attention_order=True)
MODEL_SETS = ["model.image_size=16", "model.model_channels=32", "model.channel_mult=[1,2]", "model.num_res_blocks=1",
              "model.attention_resolutions=[8]", "model.num_head_channels=32", "model.num_classes=10", "model.dropout=0.0"]
GD_CLASSIFIER = dict(image_size=16, in_channels=3, model_channels=32, out_channels=10, num_res_blocks=1, attention_resolutions=(2, 4),
                     channel_mult=(1, 2, 2), num_head_channels=32, use_scale_shift_norm=True, resblock_updown=True, pool="attention")
CLASSIFIER_SETS = ["model.image_size=16", "model.model_channels=32", "model.channel_mult=[1,2,2]", "model.num_res_blocks=1",
                   "model.attention_resolutions=[8,4]", "model.num_head_channels=32", "model.num_classes=10"]


def _perturb(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (1 / math.sqrt(p[0].numel()) if p.ndim > 1 else 0.5))
    return module.eval()


@pytest.fixture(scope="module")
def gd_model():
    torch.manual_seed(0)
    return _perturb(gd_unet.UNetModel(**GD_MODEL), seed=1)


@pytest.fixture
def model_pt(tmp_path, gd_model):
    path = tmp_path / "64x64_diffusion.pt"
    torch.save(gd_model.state_dict(), path)
    return path


def _cli(checkpoint, out, preset=None, kind=None, overrides=(), force=False) -> int:
    """`difflab import guided-diffusion ...` through the real entry point, in process."""
    from difflab.cli.main import main

    args = ["import", "guided-diffusion", "--checkpoint", str(checkpoint), "--out", str(out)]
    args += (["--preset", preset] if preset else []) + (["--kind", kind] if kind else []) + (["--force"] if force else [])
    for o in overrides:
        args += ["--set", o]
    return main(args)


def test_cli_bad_checkpoint_is_one_line_error(tmp_path, capsys):
    from conftest import one_line_error

    code = _cli(tmp_path / "nope.pt", tmp_path / "run", preset="adm-imagenet64")
    assert "does not exist" in one_line_error(code, capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_imported_model_predicts_guided_diffusions_eps_and_v_and_samples(tmp_path, model_pt, gd_model, capsys):
    out = tmp_path / "run"
    assert _cli(checkpoint=model_pt, out=out, preset="adm-imagenet64", overrides=MODEL_SETS) == 0
    assert "difflab sample --run" in capsys.readouterr().out
    run = load_run(out)
    cfg = run.cfg
    assert (cfg.process.schedule, cfg.process.T) == ("cosine", 1000)  # the 64x64 release's --noise_schedule cosine
    assert (cfg.denoiser.parameterization, cfg.denoiser.var_type) == ("eps", "learned_range")
    assert json.loads((out / "checkpoints" / "step-0.json").read_text())["imported"]["checkpoint"] == "64x64_diffusion.pt"

    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 3, 16, 16, generator=g)
    t = torch.tensor([0, 400, 999])
    y = torch.tensor([1, 5, 9])
    with torch.no_grad():
        ref = gd_model(x, t, y)
        eps, v = run.denoiser.raw(x, t, y)
    torch.testing.assert_close(eps, ref[:, :3], rtol=1e-5, atol=1e-5)  # first half: eps
    torch.testing.assert_close(v, ref[:, 3:], rtol=1e-5, atol=1e-5)  # second half: the variance interpolation v in [-1, 1]

    # The whole prediction equals guided-diffusion's p_mean_variance for this process (cosine, LEARNED_RANGE), t > 0.
    diffusion = gd.GaussianDiffusion(betas=gd.get_named_beta_schedule("cosine", 1000), model_mean_type=gd.ModelMeanType.EPSILON,
                                     model_var_type=gd.ModelVarType.LEARNED_RANGE, loss_type=gd.LossType.MSE)
    with torch.no_grad():
        expected = diffusion.p_mean_variance(gd_model, x[1:], t[1:], clip_denoised=True, model_kwargs={"y": y[1:]})
        pred = run.denoiser(x[1:], t[1:], y[1:])
    torch.testing.assert_close(pred.x0.float(), expected["pred_xstart"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(pred.mean.float(), expected["mean"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(pred.log_var.float().expand_as(expected["log_variance"]), expected["log_variance"], rtol=1e-4, atol=1e-4)

    # Any sampler runs on it (few steps: this checks the plumbing, not image quality).
    x_T = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    steps = [999, 666, 333, 0]
    for sampler in (ddim, ddpm):
        with torch.no_grad():
            x0 = sampler(run.denoiser, x_T, steps, generator=torch.Generator().manual_seed(4), y=torch.tensor([2, 3]))
        assert x0.shape == x_T.shape and torch.isfinite(x0).all()


def test_imported_classifier_loads_and_matches_guided_diffusions_logits(tmp_path):
    torch.manual_seed(0)
    ref = _perturb(gd_unet.EncoderUNetModel(**GD_CLASSIFIER), seed=5)
    pt = tmp_path / "64x64_classifier.pt"
    torch.save(ref.state_dict(), pt)
    out = tmp_path / "clf"
    # --preset adm-imagenet64 --kind classifier means the classifier released beside that model
    _cli(checkpoint=pt, out=out, preset="adm-imagenet64", kind="classifier", overrides=CLASSIFIER_SETS)
    loaded = load_run(out, kind="classifier")
    assert loaded.cfg.process.schedule == "cosine" and loaded.cfg.model.num_classes == 10
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    t = torch.tensor([3, 900])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x, t), ref(x, t), rtol=1e-5, atol=1e-5)


def test_released_names_pick_preset_kind_and_schedule():
    assert RELEASES["64x64_diffusion.pt"].schedule == "cosine"
    assert RELEASES["64x64_classifier.pt"].preset == "adm-imagenet64-clf"
    cfg = import_run_config("model", "adm-imagenet256")
    assert (cfg.process.schedule, cfg.model.num_classes, cfg.model.learn_sigma) == ("linear", 1000, True)
    uncond = import_run_config("model", "adm-lsun256", overrides=RELEASES["256x256_diffusion_uncond.pt"].overrides)
    assert uncond.model.num_classes is None and uncond.model.dropout == 0.0


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_missing_file(tmp_path):
    with pytest.raises(UserError) as e:
        import_guided_checkpoint(tmp_path / "nope.pt", tmp_path / "run", preset="adm-imagenet64")
    assert "does not exist" in _one_line(e)


def test_not_a_state_dict(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a zip or a pickle")
    with pytest.raises(UserError) as e:
        import_guided_checkpoint(junk, tmp_path / "a", preset="adm-imagenet64")
    assert "weights_only" in _one_line(e)
    lst = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], lst)
    with pytest.raises(UserError) as e:
        import_guided_checkpoint(lst, tmp_path / "b", preset="adm-imagenet64")
    assert "state dict" in _one_line(e)


def test_wrong_preset_names_keys_and_shapes(tmp_path, model_pt):
    with pytest.raises(UserError) as e:  # the released 64x64 shapes, not this small model's
        import_guided_checkpoint(model_pt, tmp_path / "run", preset="adm-imagenet64")
    msg = _one_line(e)
    assert "missing key" in msg and "shape mismatch" in msg and "--preset" in msg
    bad = [s for s in MODEL_SETS if not s.startswith("model.num_classes")] + ["model.num_classes=7"]  # one wrong width: only label_emb differs
    with pytest.raises(UserError) as e:
        import_guided_checkpoint(model_pt, tmp_path / "run", preset="adm-imagenet64", overrides=bad)
    msg = _one_line(e)
    assert "label_emb.weight [10, 128] vs [7, 128]" in msg
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_refuses_existing_run_unless_force(tmp_path, model_pt):
    out = tmp_path / "run"
    import_guided_checkpoint(model_pt, out, preset="adm-imagenet64", overrides=MODEL_SETS)
    with pytest.raises(UserError) as e:
        import_guided_checkpoint(model_pt, out, preset="adm-imagenet64", overrides=MODEL_SETS)
    assert "already holds a run" in _one_line(e)
    import_guided_checkpoint(model_pt, out, preset="adm-imagenet64", overrides=MODEL_SETS, force=True)
    assert load_run(out).step == 0
