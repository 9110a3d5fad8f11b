"""diffusers folders both ways: difflab -> diffusers -> difflab is bit-identical, diffusers (a test-only reference) loads the
exported folder offline and its U-Net, DDPM and DDIM pipelines reproduce difflab's outputs from the same noise, and
everything that cannot be expressed or honoured is a one-line error."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import difflab
from conftest import cli, one_line_error, tiny_overrides
from difflab.configs import to_dict
from difflab.errors import UserError
from difflab.interop.diffusers import unet_state_dict_from_diffusers, unet_state_dict_to_diffusers
from difflab.interop.diffusers_folder import unet_config_from_diffusers, unet_config_to_diffusers
from difflab.nets import build_unet
from difflab.runs import load_run, resolve_config, train_run

diffusers = pytest.importorskip("diffusers")  # a test dependency ([test] extra); never one of difflab's

UNCOND = ["model.num_classes=null", "model.class_dropout_null=false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dfs")
    # class-conditional with a null label and 2-head legacy-order attention: the hardest mapping
    cond = _randomize(train_run(resolve_config("digits", tiny_overrides(steps=2)), root / "cond", progress=False))
    uncond = _randomize(train_run(resolve_config("digits", tiny_overrides(steps=2) + UNCOND), root / "uncond", progress=False))
    return {"cond": cond, "uncond": uncond, "root": root}


def _randomize(run):
    """Random weights in the run's checkpoint: a 2-step run's zero-initialised output and attention layers would hide a
    wrong mapping (ADM zero-inits every last layer), random ones do not."""
    ckpt = sorted((run / "checkpoints").glob("step-*.safetensors"))[-1]
    tensors = load_file(str(ckpt))
    g = torch.Generator().manual_seed(11)
    for k, v in tensors.items():
        if k.startswith(("ema.", "model.")) and v.is_floating_point():
            tensors[k] = 0.2 * torch.randn(v.shape, generator=g, dtype=v.dtype)
    save_file(tensors, str(ckpt))
    return run


def _export(run, out, capsys, *extra):
    code, _, err = cli(["export", "diffusers", run, "--out", out, *extra], capsys)
    assert code == 0, err
    return out


def test_round_trip_is_bit_identical(runs, capsys, tmp_path):
    folder = _export(runs["cond"], tmp_path / "pipe", capsys)
    assert {p.name for p in folder.iterdir()} == {"unet", "scheduler", "model_index.json", "difflab.json"}
    code, _, err = cli(["import", "diffusers", folder, "--out", tmp_path / "back"], capsys)
    assert code == 0, err
    a, b = load_run(runs["cond"]), load_run(tmp_path / "back")
    assert to_dict(a.cfg) == to_dict(b.cfg)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # and the weights in between are diffusers' names, each tensor once
    theirs = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    assert "down_blocks.1.attentions.0.to_q.weight" in theirs and sum(v.numel() for v in theirs.values()) == sum(v.numel() for v in sa.values())


def test_the_state_dict_maps_are_inverse_for_every_head_layout():
    for extra in ({"num_heads": 2, "use_new_attention_order": False}, {"num_head_channels": 8, "use_new_attention_order": True},
                  {"num_heads": 1}):
        cfg = resolve_config("digits", tiny_overrides() + [f"model.{k}={json.dumps(v)}" for k, v in extra.items()]).model
        torch.manual_seed(0)
        state = build_unet(cfg).state_dict()
        there = unet_state_dict_to_diffusers(state, cfg)
        back = unet_state_dict_from_diffusers(there, cfg)
        assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state), extra
        assert unet_config_from_diffusers(unet_config_to_diffusers(cfg)).channel_mult == cfg.channel_mult


def test_diffusers_loads_the_folder_and_its_unet_matches(runs, capsys, tmp_path):
    folder = _export(runs["cond"], tmp_path / "pipe", capsys)
    unet = diffusers.UNet2DModel.from_pretrained(folder / "unet").eval()
    run = load_run(runs["cond"])
    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(4, 1, 8, 8, generator=g), torch.tensor([0, 7, 25, 49]), torch.tensor([0, 3, 9, 10])  # 10: the null label
    with torch.no_grad():
        theirs = unet(x, t, class_labels=y).sample
        ours = run.model(x, t.float(), y)
    assert (theirs - ours).abs().max() < 1e-4 * ours.abs().max() and ours.abs().max() > 0.1
    sched = diffusers.DDPMScheduler.from_pretrained(folder / "scheduler")
    ours_abar = run.denoiser.process.alpha_bar
    assert torch.allclose(sched.alphas_cumprod.double(), ours_abar, rtol=1e-5)
    assert sched.config.prediction_type == "epsilon" and sched.config.variance_type == "fixed_small" and sched.config.clip_sample


def test_ddim_pipeline_reproduces_difflab_ddim(runs, capsys, tmp_path):
    folder = _export(runs["uncond"], tmp_path / "pipe", capsys)
    pipe = diffusers.DDIMPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    # difflab re-derives eps from the clipped x0 (as guided-diffusion does): diffusers' use_clipped_model_output
    out = pipe(batch_size=6, num_inference_steps=5, eta=0.0, generator=torch.Generator().manual_seed(3), output_type="np",
               use_clipped_model_output=True).images
    res = difflab.load_run(runs["uncond"], device="cpu").sample(6, sampler="ddim", steps=5, spacing="leading", seed=3, batch_size=6)
    ours = ((res.images + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert np.abs(out - ours).max() < 1e-4 and ours.std() > 0.05


def test_ddpm_pipeline_reproduces_difflab_ddpm(runs, capsys, tmp_path):
    folder = _export(runs["uncond"], tmp_path / "pipe", capsys)
    pipe = diffusers.DDPMPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    T = load_run(runs["uncond"]).denoiser.process.T
    out = pipe(batch_size=4, num_inference_steps=T, generator=torch.Generator().manual_seed(5), output_type="np").images
    res = difflab.load_run(runs["uncond"], device="cpu").sample(4, sampler="ddpm", steps=T, spacing="leading", seed=5, batch_size=4)
    ours = ((res.images + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert np.abs(out - ours).max() < 1e-4  # the same noise, drawn in the same order from the same generator


def test_a_diffusers_made_folder_imports(tmp_path, capsys):
    """A folder written by diffusers itself (random init, DDPM CIFAR-10 layout shrunk) imports and samples; weights agree."""
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32), layers_per_block=1,
                                 down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                                 norm_num_groups=8, attention_head_dim=None, flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6,
                                 downsample_padding=0).eval()
    sched = diffusers.DDPMScheduler(num_train_timesteps=50, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=sched)
    pipe.save_pretrained(tmp_path / "hub")
    code, _, err = cli(["import", "diffusers", tmp_path / "hub", "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    run = load_run(tmp_path / "run")
    assert run.cfg.process.schedule == "cosine" and run.cfg.denoiser.parameterization == "v" and run.cfg.model.time_embed_freq_shift == 1
    x, t = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([3, 40])
    with torch.no_grad():
            theirs, ours = unet(x, t).sample, run.model(x, t.float())
    assert (theirs - ours).abs().max() < 1e-4 * ours.abs().max() and ours.abs().max() > 0.01  # random init: outputs of order 1
    code, out, err = cli(["sample", "--run", tmp_path / "run", "--n", 2, "--steps", 3, "--out", tmp_path / "s.png"], capsys)
    assert code == 0, err


# ----- bad input: one line, exit 2, nothing written --------------------------------------------------------------------


@pytest.mark.parametrize("over,needle", [
    (["model.learn_sigma=true", "denoiser.var_type=learned_range", "loss.type=hybrid"], "learned reverse variance (model.learn_sigma"),
    (["model.resblock_updown=true"], "residual down/upsampling"),
    (["model.use_scale_shift_norm=true", "denoiser.parameterization=mu"], "'mu' parameterisation"),
])
def test_export_refuses_what_diffusers_cannot_express(tmp_path, capsys, over, needle):
    run = train_run(resolve_config("digits", tiny_overrides(steps=1) + over), tmp_path / "r", progress=False)
    code, _, err = cli(["export", "diffusers", run, "--out", tmp_path / "pipe"], capsys)
    assert needle in one_line_error(code, err) and not (tmp_path / "pipe").exists()


def test_export_refuses_other_kinds_and_ve(tmp_path, capsys):
    vae = train_run(resolve_config("digits-vae", ["train.steps=1", "train.batch_size=16", "model.base_channels=8", "model.latent_dim=4",
                                                  "eval.repeats=1", "sample.grid_size=4"]), tmp_path / "vae", progress=False)
    code, _, err = cli(["export", "diffusers", vae, "--out", tmp_path / "p"], capsys)
    assert "is a vae run; only diffusion runs export" in one_line_error(code, err)
    over = [s for s in tiny_overrides(steps=1) if not s.startswith(("process.", "sample."))] + ["process.T=20", "sample.steps=3"]
    ncsn = train_run(resolve_config("digits-ncsn", over + UNCOND), tmp_path / "ncsn", progress=False)
    code, _, err = cli(["export", "diffusers", ncsn, "--out", tmp_path / "p"], capsys)
    assert "VE (NCSN) process has no DDPMScheduler equivalent" in one_line_error(code, err) and not (tmp_path / "p").exists()


def test_export_into_a_non_empty_folder_needs_force(runs, tmp_path, capsys):
    out = tmp_path / "pipe"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = cli(["export", "diffusers", runs["uncond"], "--out", out], capsys)
    assert "--force" in one_line_error(code, err) and (out / "keep.txt").read_text() == "mine" and not (out / "unet").exists()
    _export(runs["uncond"], out, capsys, "--force")
    assert (out / "unet" / "config.json").exists() and (out / "keep.txt").read_text() == "mine"


@pytest.fixture
def folder(runs, tmp_path, capsys):
    return _export(runs["uncond"], tmp_path / "pipe", capsys)


def _edit(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("case,needle", [
    ("no-config", "has no config.json"),
    ("bin-only", "a pickle that difflab never loads"),
    ("class", "model class 'UNet2DConditionModel' is not supported"),
    ("field", "cannot honour the UNet2DModel field 'cross_attention_dim'"),
    ("resnet-down", "downsample_type 'resnet' has no difflab equivalent"),
    ("scheduler", "scheduler 'EulerDiscreteScheduler' is not supported"),
    ("schedule", "beta_schedule 'scaled_linear' has no difflab equivalent"),
    ("thresholding", "thresholding True has no difflab equivalent"),
    ("learned", "variance_type 'learned_range' has no difflab equivalent"),
    ("not-a-folder", "is not a folder"),
])
def test_import_refuses_what_it_cannot_honour(folder, tmp_path, capsys, case, needle):
    unet, sched = folder / "unet", folder / "scheduler" / "scheduler_config.json"
    target = folder
    if case == "no-config":
        shutil.rmtree(unet)
    elif case == "bin-only":
        w = unet / "diffusion_pytorch_model.safetensors"
        w.rename(unet / "diffusion_pytorch_model.bin")
    elif case == "class":
        _edit(unet / "config.json", _class_name="UNet2DConditionModel")
    elif case == "field":
        _edit(unet / "config.json", cross_attention_dim=768)
    elif case == "resnet-down":
        _edit(unet / "config.json", downsample_type="resnet")
    elif case == "scheduler":
        _edit(sched, _class_name="EulerDiscreteScheduler")
    elif case == "schedule":
        _edit(sched, beta_schedule="scaled_linear", trained_betas=None)
    elif case == "thresholding":
        _edit(sched, thresholding=True)
    elif case == "learned":
        _edit(sched, variance_type="learned_range")
    elif case == "not-a-folder":
        target = folder / "model_index.json"
    code, _, err = cli(["import", "diffusers", target, "--out", tmp_path / "run"], capsys)
    assert needle in one_line_error(code, err), err
    assert not (tmp_path / "run").exists()


def test_import_does_not_clobber_a_run(folder, runs, capsys):
    before = (runs["cond"] / "config.json").read_bytes()
    code, _, err = cli(["import", "diffusers", folder, "--out", runs["cond"]], capsys)
    assert "already holds a run" in one_line_error(code, err) and (runs["cond"] / "config.json").read_bytes() == before


def test_import_refuses_non_finite_weights(folder, tmp_path, capsys):
    w = folder / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(w))
    state["conv_in.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, str(w))
    code, _, err = cli(["import", "diffusers", folder, "--out", tmp_path / "run"], capsys)
    assert "NaN/inf" in one_line_error(code, err) and not (tmp_path / "run").exists()


def test_edited_folder_is_read_from_its_diffusers_configs(folder, tmp_path, capsys):
    """difflab.json is only trusted while the diffusers configs are the exported ones: an edit wins over it."""
    _edit(folder / "scheduler" / "scheduler_config.json", clip_sample=False)
    code, _, err = cli(["import", "diffusers", folder, "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    assert load_run(tmp_path / "run").cfg.denoiser.clip_x0 is False
    with pytest.raises(UserError):
        unet_config_to_diffusers(resolve_config("digits", ["model.timestep_scale=2"]).model)
