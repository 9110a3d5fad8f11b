"""Import openai/guided-diffusion checkpoints (Dhariwal & Nichol 2021) into difflab run folders; the reading, checking
and writing here also serve openai/improved-diffusion's (`difflab.interop.improved_diffusion`, which builds on this module).

The released `.pt` files are PyTorch state dicts whose keys are the module names of guided-diffusion's
`UNetModel` / `EncoderUNetModel`. difflab's `UNet` and `NoisyClassifierNet` use the same names and shapes
(tests/test_guided_diffusion_parity.py proves it against guided-diffusion's code), so an import is: read the
tensors without unpickling code, check every key and shape against a difflab config, and write a run folder
(config.json + checkpoints/step-0.{safetensors,json}) that `load_run` / `load_classifier` accept.
The config mappings below are pure functions of guided-diffusion's constructor arguments; this module never
imports it. It lives in train/ because it writes run folders (train.run, train.checkpoint).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import torch
from torch import Tensor, nn

from difflab.errors import UserError
from difflab.nets.classifier import CLASSIFIER_PRESETS, ClassifierConfig, NoisyClassifierNet
from difflab.nets.config import UNetConfig
from difflab.nets.presets import UNET_PRESETS
from difflab.nets.unet import UNet

Kind = Literal["model", "classifier"]


@dataclass(frozen=True)
class Release:
    """One released guided-diffusion checkpoint: what it is and how difflab names its configuration."""

    kind: Kind
    preset: str
    schedule: Literal["linear", "cosine"]  # README MODEL_FLAGS --noise_schedule (T = 1000 for every release)
    overrides: tuple[str, ...] = ()  # where the README flags differ from the preset (dropout only changes training)


# guided-diffusion README ("Download pre-trained models" and the MODEL_FLAGS of each sampling command). The
# classifiers were trained on the noise of the diffusion model they guide, so they share its schedule.
RELEASES: Mapping[str, Release] = {
    "64x64_diffusion.pt": Release("model", "adm-imagenet64", "cosine"),
    "128x128_diffusion.pt": Release("model", "adm-imagenet128", "linear"),
    "256x256_diffusion.pt": Release("model", "adm-imagenet256", "linear"),
    "256x256_diffusion_uncond.pt": Release("model", "adm-lsun256", "linear", ("model.dropout=0.0",)),
    "lsun_bedroom.pt": Release("model", "adm-lsun256", "linear"),
    "lsun_cat.pt": Release("model", "adm-lsun256", "linear"),
    "lsun_horse.pt": Release("model", "adm-lsun256", "linear"),
    "lsun_horse_nodropout.pt": Release("model", "adm-lsun256", "linear", ("model.dropout=0.0",)),
    # Table 12 of the paper: the 64x64 classifier has depth 4, the others 2 (guided-diffusion issue #7).
    "64x64_classifier.pt": Release("classifier", "adm-imagenet64-clf", "cosine"),
    "128x128_classifier.pt": Release("classifier", "adm-imagenet128-clf", "linear"),
    "256x256_classifier.pt": Release("classifier", "adm-imagenet256-clf", "linear"),
}
# Schedules of presets used with a checkpoint whose file name is not a release (e.g. a renamed download).
PRESET_SCHEDULES: Mapping[str, str] = {"adm-imagenet64": "cosine", "adm-imagenet64-clf": "cosine"}


def unet_config_from_guided(
    *, image_size: int, in_channels: int, model_channels: int, out_channels: int, num_res_blocks: int,
    attention_resolutions: Sequence[int], dropout: float = 0.0, channel_mult: Sequence[float] = (1, 2, 4, 8),
    conv_resample: bool = True, dims: int = 2, num_classes: int | None = None, use_checkpoint: bool = False,
    use_fp16: bool = False, num_heads: int = 1, num_head_channels: int = -1, num_heads_upsample: int = -1,
    use_scale_shift_norm: bool = False, resblock_updown: bool = False, use_new_attention_order: bool = False,
) -> UNetConfig:
    """The UNetConfig of guided-diffusion's `UNetModel(**kwargs)` (same argument names and defaults, unet.py).

    guided-diffusion gives attention_resolutions as downsampling rates (image_size // pixels) and out_channels
    already doubled for learned sigmas; difflab uses pixel resolutions and a learn_sigma flag.
    """
    if dims != 2:
        raise UserError(f"only 2-D guided-diffusion models can be imported; got dims={dims}")
    if any(float(m) != int(m) for m in channel_mult):
        raise UserError(f"channel_mult {list(channel_mult)} has fractional multipliers (the 512x512 model); difflab's UNet needs integers")
    learn_sigma = out_channels == 2 * in_channels
    return UNetConfig(
        image_size=image_size, in_channels=in_channels, out_channels=out_channels // 2 if learn_sigma else out_channels,
        learn_sigma=learn_sigma, model_channels=model_channels, channel_mult=tuple(int(m) for m in channel_mult),
        num_res_blocks=num_res_blocks, attention_resolutions=tuple(sorted({image_size // int(ds) for ds in attention_resolutions}, reverse=True)),
        num_heads=num_heads, num_head_channels=num_head_channels, num_heads_upsample=num_heads_upsample,
        use_new_attention_order=use_new_attention_order, dropout=float(dropout), resblock_updown=resblock_updown,
        conv_resample=conv_resample, use_scale_shift_norm=use_scale_shift_norm, num_classes=num_classes,
        norm_groups=32, norm_eps=1e-5, use_checkpoint=use_checkpoint,  # guided-diffusion's normalization(): GroupNorm(32, ch), eps 1e-5
    )


def classifier_config_from_guided(
    *, image_size: int, in_channels: int, model_channels: int, out_channels: int, num_res_blocks: int,
    attention_resolutions: Sequence[int], dropout: float = 0.0, channel_mult: Sequence[float] = (1, 2, 4, 8),
    conv_resample: bool = True, dims: int = 2, use_checkpoint: bool = False, use_fp16: bool = False, num_heads: int = 1,
    num_head_channels: int = -1, num_heads_upsample: int = -1, use_scale_shift_norm: bool = False,
    resblock_updown: bool = False, use_new_attention_order: bool = False, pool: str = "adaptive",
) -> ClassifierConfig:
    """The ClassifierConfig of guided-diffusion's `EncoderUNetModel(**kwargs)`; pools 'attention' and 'adaptive' only."""
    if dims != 2 or pool not in ("attention", "adaptive"):
        raise UserError(f"only 2-D guided-diffusion classifiers with pool 'attention' or 'adaptive' can be imported; got dims={dims}, pool={pool!r}")
    if any(float(m) != int(m) for m in channel_mult):
        raise UserError(f"channel_mult {list(channel_mult)} has fractional multipliers (the 512x512 classifier); difflab needs integers")
    return ClassifierConfig(
        image_size=image_size, in_channels=in_channels, num_classes=out_channels, model_channels=model_channels,
        channel_mult=tuple(int(m) for m in channel_mult), num_res_blocks=num_res_blocks,
        attention_resolutions=tuple(sorted({image_size // int(ds) for ds in attention_resolutions}, reverse=True)),
        num_heads=num_heads, num_head_channels=num_head_channels, use_new_attention_order=use_new_attention_order,
        dropout=float(dropout), resblock_updown=resblock_updown, conv_resample=conv_resample,
        use_scale_shift_norm=use_scale_shift_norm, pool=pool, norm_groups=32, norm_eps=1e-5, use_checkpoint=use_checkpoint,  # type: ignore[arg-type]
    )


def read_state_dict(path: Path, expect: str = "a guided-diffusion .pt file") -> dict[str, Tensor]:
    """The tensors of a released `.pt` state dict (guided-diffusion, improved-diffusion, DiT), loaded with weights_only
    (no code is unpickled); `expect` names what to give instead in the errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; download it (see docs/import.md) or fix --checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and weights_only errors all mean "not a plain PyTorch state dict"
        raise UserError(f"{path} is not a PyTorch state dict that loads with weights_only=True ({type(e).__name__}); "
                        f"give {expect}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # Lightning-style wrappers
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise UserError(f"{path} does not hold a state dict (a mapping of parameter names to tensors); give {expect}")
    # fp16-trained releases keep fp32 master weights; cast anyway so every imported run is fp32 like trained ones.
    return {k: v.float() if v.is_floating_point() else v for k, v in obj.items()}


def build_net(kind: Kind, cfg: UNetConfig | ClassifierConfig) -> nn.Module:
    """difflab's network of a config: UNet for kind 'model', NoisyClassifierNet for 'classifier'."""
    return UNet(cfg) if kind == "model" else NoisyClassifierNet(cfg)  # type: ignore[arg-type]


def state_shapes(kind: Kind, cfg: UNetConfig | ClassifierConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only: nothing is allocated, even for the 550 M parameter presets
        return {k: tuple(v.shape) for k, v in build_net(kind, cfg).state_dict().items()}


def state_dict_mismatch(state: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]]) -> str:
    """'' when keys and shapes agree, else a short description: missing, unexpected and mismatched keys."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {list(state[k].shape)} vs {list(expected[k])}" for k in expected if k in state and tuple(state[k].shape) != expected[k]]

    def few(items: list[str]) -> str:
        return ", ".join(items[:3]) + (f" (+{len(items) - 3} more)" if len(items) > 3 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {few(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es) (checkpoint vs config): {few(shapes)}")
    return "; ".join(parts)


def matching_presets(state: Mapping[str, Tensor]) -> list[tuple[Kind, str]]:
    """Every (kind, preset) whose network has exactly the checkpoint's keys and shapes."""
    found: list[tuple[Kind, str]] = []
    for kind, presets in (("model", UNET_PRESETS), ("classifier", CLASSIFIER_PRESETS)):
        for name, cfg in presets.items():
            if not state_dict_mismatch(state, state_shapes(kind, cfg)):  # type: ignore[arg-type]
                found.append((kind, name))  # type: ignore[arg-type]
    return found


def check_state_dict(state: Mapping[str, Tensor], kind: Kind, cfg: UNetConfig | ClassifierConfig, what: str) -> None:
    """Raise a one-line UserError unless `state` has exactly the keys and shapes of difflab's network for `cfg`."""
    problem = state_dict_mismatch(state, state_shapes(kind, cfg))
    if not problem:
        return
    fits = matching_presets(state)
    if fits:
        hint = "it matches " + " / ".join(f"--kind {k} --preset {p}" for k, p in fits)
    else:
        hint = "choose the --preset (and --kind) of the released model, or --set model.* to the flags it was trained with (docs/import.md)"
    raise UserError(f"{what} does not fit the {kind} config: {problem}; {hint}")


def _resolve_preset(kind: Kind, preset: str) -> str:
    if kind == "model":
        if preset not in UNET_PRESETS:
            raise UserError(f"unknown U-Net preset '{preset}'; valid: {', '.join(UNET_PRESETS)}")
        return preset
    if preset not in CLASSIFIER_PRESETS and f"{preset}-clf" in CLASSIFIER_PRESETS:
        preset = f"{preset}-clf"  # --preset adm-imagenet64 --kind classifier means the classifier released beside it
    if preset not in CLASSIFIER_PRESETS:
        raise UserError(f"unknown classifier preset '{preset}'; valid: {', '.join(CLASSIFIER_PRESETS)}")
    return preset


def import_run_config(kind: Kind, preset: str, *, schedule: str | None = None, overrides: Sequence[str] = (),
                      source: str = "guided-diffusion") -> Any:
    """The RunConfig (kind 'model') or ClassifierRunConfig (kind 'classifier') of an imported checkpoint.

    Process: VP, T = 1000, the preset's schedule (cosine for the 64x64 models, linear otherwise) unless given.
    Model with learned sigmas: eps prediction + learned_range variance (improved DDPM Eq. 15), guided-diffusion's
    ModelMeanType.EPSILON + ModelVarType.LEARNED_RANGE; otherwise its default FIXED_LARGE. `overrides` are
    `--set key=value` items applied last.
    """
    from difflab.configs import apply_overrides
    from difflab.data import DataConfig
    from difflab.denoiser import DenoiserConfig
    from difflab.losses import LossConfig
    from difflab.process import ProcessConfig

    preset = _resolve_preset(kind, preset)
    process = ProcessConfig(kind="vp", schedule=schedule or PRESET_SCHEDULES.get(preset, "linear"), T=1000)  # type: ignore[arg-type]
    if kind == "model":
        from difflab.runs.diffusion.config import RunConfig

        model = UNET_PRESETS[preset]
        # data.name records the origin; an imported run is for sampling and evaluation, not for resuming training.
        data = DataConfig(name=f"{source}:{preset}", image_size=model.image_size, channels="RGB" if model.in_channels == 3 else "auto")
        denoiser = DenoiserConfig(parameterization="eps", var_type="learned_range" if model.learn_sigma else "fixed_large", clip_x0=True)
        loss = LossConfig(type="hybrid" if model.learn_sigma else "simple")  # guided-diffusion's mse (+ vb): hybrid, vlb_weight 0.001 at T=1000
        cfg: Any = RunConfig(data=data, model=model, process=process, denoiser=denoiser, loss=loss)
    else:
        from difflab.runs.classifier import ClassifierRunConfig

        model_c = CLASSIFIER_PRESETS[preset]
        data = DataConfig(name=f"{source}:{preset}", image_size=model_c.image_size, labels="require",
                          channels="RGB" if model_c.in_channels == 3 else "auto")
        cfg = ClassifierRunConfig(data=data, model=model_c, process=process)
    cfg = apply_overrides(cfg, list(overrides))
    if not any(o.strip().startswith("data.image_size") for o in overrides):  # keep the recorded data size that of the (overridden) model
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, image_size=cfg.model.image_size))
    return cfg


def import_guided_checkpoint(checkpoint: str | Path, out: str | Path, *, preset: str | None = None, kind: Kind | None = None,
                             overrides: Sequence[str] = (), force: bool = False) -> Path:
    """Write a difflab run folder `out` holding a guided-diffusion checkpoint; returns `out`.

    preset/kind default to those of the release with the checkpoint's file name (RELEASES). The weights go to
    both model.* and ema.* of checkpoints/step-0 (released files hold the EMA weights), so `--no-ema` works too.
    Refuses a folder that already holds a run unless `force` (the rule of `difflab train`).
    """
    from difflab.runs import prepare_run_dir

    checkpoint, out = Path(checkpoint), Path(out)
    release = RELEASES.get(checkpoint.name)
    kind = kind or (release.kind if release else "model")
    if kind not in ("model", "classifier"):
        raise UserError(f"--kind must be 'model' or 'classifier'; got {kind!r}")
    if preset is None:
        if release is None or release.kind != kind:
            raise UserError(f"{checkpoint.name} is not a released file name ({', '.join(RELEASES)}); give --preset")
        preset = release.preset
    same_release = release is not None and release.kind == kind and _resolve_preset(kind, preset) == release.preset
    schedule = release.schedule if same_release else None
    cfg = import_run_config(kind, preset, schedule=schedule,
                            overrides=[*(release.overrides if same_release else ()), *overrides])
    prepare_run_dir(out, resume=False, force=force, check_only=True)  # refuse before reading gigabytes; --force moves nothing yet
    state = read_state_dict(checkpoint)
    check_state_dict(state, kind, cfg.model, str(checkpoint))
    return write_run(out, cfg, state, kind, {"from": "guided-diffusion", "checkpoint": checkpoint.name, "bytes": checkpoint.stat().st_size},
                     force=force)


def write_run(out: Path, cfg: Any, state: Mapping[str, Tensor], kind: Kind, imported: dict[str, Any], *, force: bool = False) -> Path:
    """config.json + checkpoints/step-0 with the weights as both model.* and ema.* (released files hold EMA weights).
    With `force`, a run already in `out` is replaced only once the new one is written (difflab.runs.write_replacing)."""
    import json

    from difflab.configs import to_dict
    from difflab.data.atomic import atomic_write_text
    from difflab.runs import write_replacing
    from difflab.training.checkpoint import flatten, save_checkpoint

    meta: dict[str, Any] = {"step": 0, "config": to_dict(cfg), "imported": imported}
    meta["kind"] = cfg.kind  # "diffusion" or "classifier": the run kind every checkpoint names
    # safetensors refuses tensors that share memory: the EMA copy is a real copy.
    tensors = {**flatten("model", state), **flatten("ema", {k: v.clone() for k, v in state.items()})}

    def write() -> None:
        out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(out / "checkpoints", 0, tensors, meta, keep_last=0)
        atomic_write_text(out / "config.json", json.dumps(to_dict(cfg), indent=2) + "\n")

    return write_replacing(out, force, write)


def describe_releases() -> list[str]:
    """One line per released checkpoint: file, kind, preset, schedule (for docs and `--help`)."""
    return [f"{name}: --kind {r.kind} --preset {r.preset} (schedule {r.schedule}{', ' + ' '.join(r.overrides) if r.overrides else ''})"
            for name, r in RELEASES.items()]


__all__ = [
    "RELEASES", "Release", "check_state_dict", "classifier_config_from_guided", "describe_releases", "import_guided_checkpoint",
    "import_run_config", "matching_presets", "read_state_dict", "state_dict_mismatch", "state_shapes", "unet_config_from_guided",
    "write_run",
]
