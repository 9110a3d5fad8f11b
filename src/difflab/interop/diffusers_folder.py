"""diffusers pipeline folders, both ways: `difflab export diffusers RUN --out DIR` and `difflab import diffusers DIR --out RUN`.

A folder is what `DDPMPipeline.from_pretrained(DIR)` (and `DDIMPipeline`) reads offline: `unet/config.json` +
`unet/diffusion_pytorch_model.safetensors` (a `UNet2DModel`), `scheduler/scheduler_config.json` (a `DDPMScheduler`)
and `model_index.json`. Export adds `difflab.json`, the run's full config, so that a round trip gives back the same
run (the diffusers configs cannot say, e.g., whether a class embedding holds a null label). Everything difflab cannot
express in diffusers terms, or cannot honour when importing, is a one-line error naming the feature; nothing is
silently dropped. diffusers itself is never imported: the formats are JSON and safetensors.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch

from difflab.configs import from_dict, to_dict
from difflab.data import DataConfig
from difflab.data.atomic import atomic_write, atomic_write_text
from difflab.denoiser import DenoiserConfig
from difflab.errors import UserError
from difflab.interop.diffusers import unet_state_dict_from_diffusers, unet_state_dict_to_diffusers
from difflab.interop.guided_diffusion import write_run
from difflab.nets.config import UNetConfig
from difflab.process import ProcessConfig, build_process
from difflab.runs import RunConfig, load_run, prepare_run_dir

UNET, SCHEDULER = "unet", "scheduler"
WEIGHTS = "diffusion_pytorch_model.safetensors"
DIFFUSERS_VERSION = "0.30.0"  # the oldest diffusers whose UNet2DModel and DDPMScheduler read these configs as written
PREDICTION = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}  # difflab -> diffusers prediction_type
VARIANCE = {"fixed_small": "fixed_small", "fixed_large": "fixed_large"}
SPACING = {"leading": "leading", "trailing": "trailing", "linspace": "linspace"}  # difflab spacings diffusers also has

# UNet2DModel's defaults (diffusers' signature), for keys a config leaves out.
UNET_DEFAULTS: dict[str, Any] = {
    "sample_size": None, "in_channels": 3, "out_channels": 3, "center_input_sample": False, "time_embedding_type": "positional",
    "time_embedding_dim": None, "freq_shift": 0, "flip_sin_to_cos": True,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"], "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"], "block_out_channels": [224, 448, 672, 896],
    "layers_per_block": 2, "mid_block_scale_factor": 1, "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv",
    "dropout": 0.0, "act_fn": "silu", "attention_head_dim": 8, "norm_num_groups": 32, "attn_norm_num_groups": None,
    "norm_eps": 1e-5, "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None,
    "num_class_embeds": None, "num_train_timesteps": None,
}
# DDPMScheduler's and DDIMScheduler's keys difflab understands, with diffusers' defaults.
SCHEDULER_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear", "trained_betas": None,
    "variance_type": "fixed_small", "clip_sample": True, "clip_sample_range": 1.0, "prediction_type": "epsilon",
    "thresholding": False, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "timestep_spacing": "leading",
    "steps_offset": 0, "rescale_betas_zero_snr": False, "set_alpha_to_one": True,
}


# ----- difflab -> diffusers -------------------------------------------------------------------------------------------


def _attention_head_dim(m: UNetConfig) -> int | None:
    """diffusers' attention_head_dim for difflab's heads (heads = channels // attention_head_dim in every attention layer)."""
    layers = [(ch, m.heads_for(ch, up)) for ch, up in m.attention_channels()]
    if not layers or all(h == 1 for _, h in layers):
        return None  # one head everywhere: diffusers' null
    dims = {ch // h for ch, h in layers}
    if len(dims) != 1 or any(ch % h for ch, h in layers):
        raise UserError("the U-Net's attention heads have different widths at different levels (model.num_heads with "
                        "num_head_channels -1); diffusers' UNet2DModel has one attention_head_dim: set model.num_head_channels")
    return dims.pop()


def unet_config_to_diffusers(m: UNetConfig) -> dict[str, Any]:
    """The UNet2DModel config of a difflab U-Net; a feature UNet2DModel cannot express is a one-line error naming it."""
    unsupported = [
        (m.learn_sigma, "a learned reverse variance (model.learn_sigma: diffusers' DDIM pipeline cannot use the extra channels)"),
        (m.resblock_updown, "residual down/upsampling (model.resblock_updown)"),
        (not m.conv_resample, "plain avg-pool / nearest resampling (model.conv_resample false)"),
        (m.timestep_scale != 1.0, f"rescaled timesteps (model.timestep_scale {m.timestep_scale}; diffusers passes the step index)"),
        (m.in_channels != m.out_channels, "an image-conditional model (in_channels != out_channels: the pipeline cannot feed the condition)"),
        (m.channel_mult[0] != 1, "channel_mult[0] != 1 (diffusers' timestep features are block_out_channels[0] wide, ADM's model_channels)"),
    ]
    for bad, what in unsupported:
        if bad:
            raise UserError(f"cannot export to diffusers: {what} has no UNet2DModel equivalent")
    attn = [r in m.attention_resolutions for r in m.resolutions]
    return {
        "_class_name": "UNet2DModel", "_diffusers_version": DIFFUSERS_VERSION,
        "sample_size": m.image_size, "in_channels": m.in_channels, "out_channels": m.out_channels, "center_input_sample": False,
        "time_embedding_type": "positional", "time_embedding_dim": m.emb_dim, "freq_shift": m.time_embed_freq_shift,
        "flip_sin_to_cos": m.time_embed_flip_sin_to_cos,
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        "mid_block_type": "UNetMidBlock2D",
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
        "block_out_channels": list(m.level_channels), "layers_per_block": m.num_res_blocks, "mid_block_scale_factor": 1,
        "downsample_padding": m.downsample_padding, "downsample_type": "conv", "upsample_type": "conv", "dropout": m.dropout,
        "act_fn": "silu", "attention_head_dim": _attention_head_dim(m), "norm_num_groups": m.norm_groups,
        # Explicit: with scale_shift and null, diffusers' middle attention would have no GroupNorm (difflab's always has).
        "attn_norm_num_groups": m.norm_groups,
        "norm_eps": m.norm_eps, "resnet_time_scale_shift": "scale_shift" if m.use_scale_shift_norm else "default",
        "add_attention": m.mid_attention, "class_embed_type": None,
        "num_class_embeds": m.num_label_embeddings if m.num_classes is not None else None,
    }


def scheduler_config_to_diffusers(cfg: RunConfig) -> dict[str, Any]:
    """The DDPMScheduler config of a run: its exact betas, T, prediction type, variance type and clipping."""
    p, d = cfg.process, cfg.denoiser
    if p.kind != "vp":
        raise UserError("cannot export to diffusers: a VE (NCSN) process has no DDPMScheduler equivalent; export VP runs")
    if d.parameterization not in PREDICTION:
        raise UserError(f"cannot export to diffusers: the '{d.parameterization}' parameterisation has no diffusers prediction_type "
                        f"(it has {', '.join(PREDICTION)})")
    if d.var_type not in VARIANCE:
        raise UserError(f"cannot export to diffusers: the '{d.var_type}' reverse variance has no DDPM/DDIM pipeline equivalent "
                        "(fixed_small or fixed_large export)")
    betas = build_process(p).betas.tolist()
    return {
        "_class_name": "DDPMScheduler", "_diffusers_version": DIFFUSERS_VERSION,
        "num_train_timesteps": p.T,
        # The betas themselves: diffusers' formulas run in float32 and its cosine fixes s, so a named schedule could differ.
        "beta_schedule": "linear" if p.schedule == "linear" else "squaredcos_cap_v2",
        "beta_start": betas[0], "beta_end": betas[-1], "trained_betas": betas,
        "variance_type": VARIANCE[d.var_type], "clip_sample": d.clip_x0, "clip_sample_range": 1.0,
        "prediction_type": PREDICTION[d.parameterization], "thresholding": False,
        "timestep_spacing": SPACING.get(cfg.sample.spacing, "leading"), "steps_offset": 0,
        # DDIMPipeline reads this config too: its last step goes to alpha_bar = 1 (x_0), as difflab's samplers do.
        "set_alpha_to_one": True,
    }


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def export_diffusers(run: str | Path, out: str | Path, *, force: bool = False, ema: bool = True) -> Path:
    """Write the diffusion run `run` (EMA weights by default) as a diffusers DDPM pipeline folder `out`; returns `out`."""
    from safetensors.torch import save

    out = Path(out)
    loaded = load_run(run, ema=ema, device="cpu")
    if loaded.kind != "diffusion":
        raise UserError(f"cannot export to diffusers: {run} is a {loaded.kind} run; only diffusion runs export (as UNet2DModel + DDPMScheduler)")
    cfg: RunConfig = loaded.cfg
    if cfg.condition.kind != "none":
        raise UserError(f"cannot export to diffusers: an image-conditional run (condition.kind '{cfg.condition.kind}') needs its condition y, "
                        "which diffusers' DDPM pipeline cannot feed")
    unet_cfg, sched_cfg = unet_config_to_diffusers(cfg.model), scheduler_config_to_diffusers(cfg)  # every refusal before writing
    state = unet_state_dict_to_diffusers(loaded.model.state_dict(), cfg.model)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the pipeline")
    if out.exists() and any(out.iterdir()) and not force:
        raise UserError(f"{out} exists and is not empty; choose another --out or add --force to overwrite its pipeline files")
    (out / UNET).mkdir(parents=True, exist_ok=True)
    (out / SCHEDULER).mkdir(parents=True, exist_ok=True)
    blob = save(state, metadata={"format": "pt"})  # "pt": what diffusers' own save_pretrained writes
    atomic_write(out / UNET / WEIGHTS, lambda f: f.write(blob))
    _write_json(out / UNET / "config.json", unet_cfg)
    _write_json(out / SCHEDULER / "scheduler_config.json", sched_cfg)
    _write_json(out / "model_index.json", {"_class_name": "DDPMPipeline", "_diffusers_version": DIFFUSERS_VERSION,
                                          "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]})
    _write_json(out / "difflab.json", {"config": to_dict(cfg), "step": loaded.step, "ema": ema, "from": str(Path(run))})
    return out


# ----- diffusers -> difflab -------------------------------------------------------------------------------------------


def _read_config(path: Path, what: str) -> dict:
    if not path.is_file():
        raise UserError(f"{path.parent} has no {path.name}: a diffusers {what} folder has one (save it with save_pretrained)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not readable JSON ({e}); the folder is damaged") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object")
    return data


def _with_defaults(data: dict, defaults: dict, what: str, path: Path) -> dict:
    """`data` over `defaults`; an unknown key is an error (a field difflab cannot honour), metadata (_*) is skipped."""
    unknown = sorted(k for k in data if not k.startswith("_") and k not in defaults)
    if unknown:
        raise UserError(f"{path}: difflab cannot honour the {what} field '{unknown[0]}'; remove it if it is a default, or this model is "
                        "not one difflab can import")
    return {**defaults, **{k: v for k, v in data.items() if not k.startswith("_")}}


def _require(ok: bool, path: Path, what: str) -> None:
    if not ok:
        raise UserError(f"{path}: {what} has no difflab equivalent")


def unet_config_from_diffusers(data: dict, path: Path = Path("unet/config.json")) -> UNetConfig:
    """The difflab UNetConfig of a UNet2DModel config (DDPM layout); any field it cannot honour is an error."""
    if data.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise UserError(f"{path}: model class {data.get('_class_name')!r} is not supported; difflab imports UNet2DModel folders")
    c = _with_defaults(data, UNET_DEFAULTS, "UNet2DModel", path)
    boc = [int(b) for b in c["block_out_channels"]]
    n = len(boc)
    _require(len(c["down_block_types"]) == n == len(c["up_block_types"]), path, "block lists of different lengths")
    bad = [t for t in [*c["down_block_types"], *c["up_block_types"]] if t not in ("DownBlock2D", "AttnDownBlock2D", "UpBlock2D", "AttnUpBlock2D")]
    _require(not bad, path, f"block type {bad[0] if bad else ''!r} (only DownBlock2D/AttnDownBlock2D/UpBlock2D/AttnUpBlock2D)")
    down = [t == "AttnDownBlock2D" for t in c["down_block_types"]]
    up = [t == "AttnUpBlock2D" for t in c["up_block_types"]]
    _require(down == up[::-1], path, "attention at different levels on the way down and up")
    size = c["sample_size"]
    if isinstance(size, (list, tuple)):
        _require(len(size) == 2 and size[0] == size[1], path, f"a non-square sample_size {size}")
        size = size[0]
    _require(isinstance(size, int) and size > 0, path, "a missing sample_size")
    for key, want in (("center_input_sample", False), ("time_embedding_type", "positional"), ("mid_block_type", "UNetMidBlock2D"),
                      ("mid_block_scale_factor", 1), ("downsample_type", "conv"), ("upsample_type", "conv"), ("act_fn", "silu"),
                      ("class_embed_type", None)):
        _require(c[key] == want, path, f"{key} {c[key]!r}")
    _require(c["attn_norm_num_groups"] in (None, c["norm_num_groups"]), path, "attention norm groups different from the ResNets'")
    _require(c["attn_norm_num_groups"] is not None or c["resnet_time_scale_shift"] == "default", path,
             "a middle attention without GroupNorm (resnet_time_scale_shift scale_shift with attn_norm_num_groups null)")
    _require(c["downsample_padding"] in (0, 1), path, f"downsample_padding {c['downsample_padding']}")
    _require(c["resnet_time_scale_shift"] in ("default", "scale_shift"), path, f"resnet_time_scale_shift {c['resnet_time_scale_shift']!r}")
    _require(all(b % boc[0] == 0 for b in boc), path, f"block_out_channels {boc} that are not multiples of the first")
    head_dim = c["attention_head_dim"]
    heads = dict(num_heads=1, num_head_channels=-1) if head_dim is None else dict(num_head_channels=int(head_dim))
    num_classes = c["num_class_embeds"]
    return UNetConfig(
        image_size=size, in_channels=c["in_channels"], out_channels=c["out_channels"], model_channels=boc[0],
        channel_mult=tuple(b // boc[0] for b in boc), num_res_blocks=c["layers_per_block"],
        attention_resolutions=tuple(size // 2**i for i, a in enumerate(down) if a), mid_attention=bool(c["add_attention"]),
        use_new_attention_order=head_dim is not None, dropout=float(c["dropout"]), resblock_updown=False, conv_resample=True,
        downsample_padding=c["downsample_padding"], use_scale_shift_norm=c["resnet_time_scale_shift"] == "scale_shift",
        num_classes=num_classes, class_dropout_null=False, learn_sigma=False, norm_groups=c["norm_num_groups"], norm_eps=float(c["norm_eps"]),
        time_embed_dim=c["time_embedding_dim"] if c["time_embedding_dim"] not in (None, 4 * boc[0]) else None,
        time_embed_flip_sin_to_cos=bool(c["flip_sin_to_cos"]), time_embed_freq_shift=int(c["freq_shift"]), **heads,
    )


def _schedule(c: dict, path: Path) -> ProcessConfig:
    """The VP process of a scheduler config: its named schedule, or explicit betas that must be one of difflab's."""
    T = int(c["num_train_timesteps"])
    if c["trained_betas"] is not None:
        given = torch.tensor(c["trained_betas"], dtype=torch.float64)
        _require(len(given) == T, path, f"{len(given)} trained_betas for num_train_timesteps {T}")
        for cand in (ProcessConfig(kind="vp", schedule="linear", T=T, beta_start=float(given[0]) * T / 1000, beta_end=float(given[-1]) * T / 1000),
                     ProcessConfig(kind="vp", schedule="cosine", T=T)):
            try:
                if torch.allclose(build_process(cand).betas, given, rtol=1e-6, atol=1e-9):
                    return cand
            except UserError:
                continue
        raise UserError(f"{path}: trained_betas are neither a linear nor a cosine schedule; difflab cannot honour arbitrary betas")
    if c["beta_schedule"] == "linear":
        # diffusers' beta_start/beta_end are the schedule's own ends; difflab's are stated at T = 1000.
        return ProcessConfig(kind="vp", schedule="linear", T=T, beta_start=c["beta_start"] * T / 1000, beta_end=c["beta_end"] * T / 1000)
    if c["beta_schedule"] == "squaredcos_cap_v2":
        return ProcessConfig(kind="vp", schedule="cosine", T=T, cosine_s=0.008)
    raise UserError(f"{path}: beta_schedule {c['beta_schedule']!r} has no difflab equivalent (linear, squaredcos_cap_v2 or trained_betas)")


def run_config_from_diffusers(unet: dict, scheduler: dict, *, unet_path: Path = Path("unet/config.json"),
                              scheduler_path: Path = Path("scheduler/scheduler_config.json"), saved: dict | None = None) -> RunConfig:
    """The RunConfig of a diffusers pipeline folder's two configs. `saved`: a difflab.json written by export, whose
    other sections (data, train, sample, loss) are kept when its model and process are the ones the folder describes."""
    model = unet_config_from_diffusers(unet, unet_path)
    if scheduler.get("_class_name", "DDPMScheduler") not in ("DDPMScheduler", "DDIMScheduler"):
        raise UserError(f"{scheduler_path}: scheduler {scheduler.get('_class_name')!r} is not supported; difflab imports DDPMScheduler / DDIMScheduler configs")
    c = _with_defaults(scheduler, SCHEDULER_DEFAULTS, "scheduler", scheduler_path)
    for key, want in (("thresholding", False), ("rescale_betas_zero_snr", False), ("clip_sample_range", 1.0), ("steps_offset", 0),
                      ("set_alpha_to_one", True)):
        _require(c[key] == want, scheduler_path, f"{key} {c[key]!r}")
    prediction = {v: k for k, v in PREDICTION.items()}.get(c["prediction_type"])
    _require(prediction is not None, scheduler_path, f"prediction_type {c['prediction_type']!r}")
    variance = {"fixed_small": "fixed_small", "fixed_small_log": "fixed_small", "fixed_large": "fixed_large",
                "fixed_large_log": "fixed_large"}.get(c["variance_type"])
    _require(variance is not None, scheduler_path, f"variance_type {c['variance_type']!r}")
    spacing = c["timestep_spacing"]
    _require(spacing in SPACING, scheduler_path, f"timestep_spacing {spacing!r}")
    process = _schedule(c, scheduler_path)
    denoiser = DenoiserConfig(parameterization=prediction, var_type=variance, clip_x0=bool(c["clip_sample"]))
    if saved is not None:
        old = from_dict(RunConfig, {**saved, "kind": "diffusion"})
        try:
            same = unet_config_to_diffusers(old.model) == unet and scheduler_config_to_diffusers(old) == scheduler
        except UserError:
            same = False
        if same:  # the folder is the exported run, unedited: its data, training and sampling settings come back too
            return old
    data = DataConfig(name="diffusers-import", image_size=model.image_size, channels="RGB" if model.in_channels == 3 else "auto")
    base = RunConfig()
    sample = dataclasses.replace(base.sample, sampler="ddim", steps=min(base.sample.steps, process.T), spacing=spacing)
    return RunConfig(data=data, model=model, process=process, denoiser=denoiser, sample=sample)


def import_diffusers(folder: str | Path, out: str | Path, *, force: bool = False) -> Path:
    """Write the diffusers pipeline (or bare UNet2DModel + scheduler) folder `folder` as a difflab run folder `out`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder, out = Path(folder).expanduser(), Path(out)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; give a diffusers pipeline folder (with unet/ and scheduler/)")
    unet_dir = folder / UNET if (folder / UNET).is_dir() else folder
    sched_path = folder / SCHEDULER / "scheduler_config.json"
    if not (unet_dir / "config.json").is_file():
        raise UserError(f"{folder} has no config.json (nor unet/config.json): it is not a diffusers model folder")
    weights = unet_dir / WEIGHTS
    if not weights.is_file():
        pickled = sorted(p.name for p in unet_dir.glob("*.bin"))
        if pickled:
            raise UserError(f"{unet_dir} has only {pickled[0]}, a pickle that difflab never loads (it can run code); convert it to "
                            f"{WEIGHTS} (diffusers: model.save_pretrained(dir, safe_serialization=True))")
        raise UserError(f"{unet_dir} has no {WEIGHTS}; save the model with safetensors")
    unet_cfg = _read_config(unet_dir / "config.json", "UNet2DModel")
    sched_cfg = _read_config(sched_path, "scheduler") if sched_path.is_file() else {}  # a bare UNet: diffusers' DDPM defaults
    saved = _read_config(folder / "difflab.json", "difflab")["config"] if (folder / "difflab.json").is_file() else None
    cfg = run_config_from_diffusers(unet_cfg, sched_cfg, unet_path=unet_dir / "config.json", scheduler_path=sched_path, saved=saved)
    prepare_run_dir(out, resume=False, force=force, check_only=True)  # --force moves nothing until the new run is written
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{weights} is not a readable safetensors file ({e}); the folder is damaged") from None
    if any(not torch.is_floating_point(v) or not math.isfinite(float(v.abs().max())) for v in state.values() if v.numel()):
        raise UserError(f"{weights} holds NaN/inf or non-float tensors; it is not a trained UNet2DModel")
    ours = unet_state_dict_from_diffusers(state, cfg.model)
    return write_run(out, cfg, ours, "model", {"from": "diffusers", "folder": str(folder)}, force=force)


__all__ = ["export_diffusers", "import_diffusers", "run_config_from_diffusers", "scheduler_config_to_diffusers",
           "unet_config_from_diffusers", "unet_config_to_diffusers"]
