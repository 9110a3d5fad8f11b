"""Import openai/improved-diffusion checkpoints (Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic
Models") into difflab run folders; the shared reading, checking and writing is in `difflab.interop.guided_diffusion`.

improved-diffusion's `UNetModel` is guided-diffusion's with fewer options, so the network mapping is shared; what is
its own is the release table (flags from its README) and `--rescale_timesteps True`, expressed as
`model.timestep_scale = 1000 / T`. This module never imports improved-diffusion.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from difflab.errors import UserError
from difflab.interop.guided_diffusion import read_state_dict, state_dict_mismatch, state_shapes, unet_config_from_guided, write_run

# ----- improved-diffusion (Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models") ---------------


@dataclass(frozen=True)
class ImprovedFlags:
    """improved-diffusion's model and diffusion flags, with the defaults of its `script_util.model_and_diffusion_defaults()`."""

    image_size: int = 64
    num_channels: int = 128
    num_res_blocks: int = 2
    num_heads: int = 4
    num_heads_upsample: int = -1
    attention_resolutions: str = "16,8"  # pixel resolutions, comma-separated, as on its command line
    dropout: float = 0.0
    learn_sigma: bool = False
    sigma_small: bool = False
    class_cond: bool = False
    diffusion_steps: int = 1000
    noise_schedule: Literal["linear", "cosine"] = "linear"
    use_kl: bool = False
    predict_xstart: bool = False
    rescale_timesteps: bool = True  # the network sees t * 1000 / diffusion_steps (float)
    rescale_learned_sigmas: bool = True
    use_scale_shift_norm: bool = True


# The README's MODEL_FLAGS + DIFFUSION_FLAGS of each released model; every other flag is the default above.
# L_vlb releases differ from L_hybrid ones only in the objective (use_kl), which import records but does not need.
IMPROVED_PRESETS: Mapping[str, ImprovedFlags] = {
    "iddpm-cifar10": ImprovedFlags(image_size=32, num_channels=128, num_res_blocks=3, learn_sigma=True, dropout=0.3,
                                   diffusion_steps=4000, noise_schedule="cosine"),
    "iddpm-cifar10-vlb": ImprovedFlags(image_size=32, num_channels=128, num_res_blocks=3, learn_sigma=True, dropout=0.3,
                                       diffusion_steps=4000, noise_schedule="cosine", use_kl=True),
    "iddpm-imagenet64": ImprovedFlags(image_size=64, num_channels=128, num_res_blocks=3, learn_sigma=True,
                                      diffusion_steps=4000, noise_schedule="cosine"),
    "iddpm-imagenet64-vlb": ImprovedFlags(image_size=64, num_channels=128, num_res_blocks=3, learn_sigma=True,
                                          diffusion_steps=4000, noise_schedule="cosine", use_kl=True),
    "iddpm-imagenet64-cond": ImprovedFlags(image_size=64, num_channels=192, num_res_blocks=3, learn_sigma=True, class_cond=True,
                                           diffusion_steps=4000, noise_schedule="cosine", rescale_learned_sigmas=False,
                                           rescale_timesteps=False),
    "iddpm-lsun256": ImprovedFlags(image_size=256, num_channels=128, num_res_blocks=2, num_heads=1, learn_sigma=True,
                                   use_scale_shift_norm=False, attention_resolutions="16", diffusion_steps=1000,
                                   noise_schedule="linear", rescale_learned_sigmas=False, rescale_timesteps=False),
}

# improved-diffusion README, "Models and Hyperparameters": released file -> preset. Not importable: upsample_cond_500K.pt
# (a SuperResModel, which concatenates an upsampled low-resolution image to its input).
IMPROVED_RELEASES: Mapping[str, str] = {
    "cifar10_uncond_50M_500K.pt": "iddpm-cifar10",
    "cifar10_uncond_vlb_50M_500K.pt": "iddpm-cifar10-vlb",
    "imagenet64_uncond_100M_1500K.pt": "iddpm-imagenet64",
    "imagenet64_uncond_vlb_100M_1500K.pt": "iddpm-imagenet64-vlb",
    "imagenet64_cond_270M_250K.pt": "iddpm-imagenet64-cond",
    "lsun_uncond_100M_1200K_bs128.pt": "iddpm-lsun256",
    "lsun_uncond_100M_2400K_bs64.pt": "iddpm-lsun256",
}

# script_util.create_model: the channel multipliers are fixed by the image size.
_IMPROVED_CHANNEL_MULT: Mapping[int, tuple[int, ...]] = {256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4), 32: (1, 2, 2, 2)}


def improved_run_config(flags: ImprovedFlags, *, name: str = "custom", overrides: Sequence[str] = ()) -> Any:
    """The RunConfig of an improved-diffusion model trained with `flags` (its create_model_and_diffusion), then `--set` items.

    With rescale_timesteps the network saw t * 1000 / T: model.timestep_scale = 1000 / process.T, kept so when --set
    changes process.T (as improved-diffusion's --diffusion_steps would) unless model.timestep_scale is set too.
    """
    from difflab.configs import apply_overrides
    from difflab.data import DataConfig
    from difflab.denoiser import DenoiserConfig
    from difflab.losses import LossConfig
    from difflab.process import ProcessConfig
    from difflab.runs.diffusion.config import RunConfig

    f = flags
    if f.image_size not in _IMPROVED_CHANNEL_MULT:
        raise UserError(f"improved-diffusion models have image_size 32, 64 or 256; got {f.image_size}")
    model = unet_config_from_guided(
        image_size=f.image_size, in_channels=3, model_channels=f.num_channels, out_channels=6 if f.learn_sigma else 3,
        num_res_blocks=f.num_res_blocks, attention_resolutions=[f.image_size // int(r) for r in f.attention_resolutions.split(",")],
        dropout=f.dropout, channel_mult=_IMPROVED_CHANNEL_MULT[f.image_size], num_classes=1000 if f.class_cond else None,
        num_heads=f.num_heads, num_heads_upsample=f.num_heads_upsample, use_scale_shift_norm=f.use_scale_shift_norm,
    )
    model = dataclasses.replace(model, timestep_scale=1000.0 / f.diffusion_steps if f.rescale_timesteps else 1.0)
    process = ProcessConfig(kind="vp", schedule=f.noise_schedule, T=f.diffusion_steps)
    var_type = "learned_range" if f.learn_sigma else ("fixed_small" if f.sigma_small else "fixed_large")
    denoiser = DenoiserConfig(parameterization="x0" if f.predict_xstart else "eps", var_type=var_type, clip_x0=True)  # type: ignore[arg-type]
    if f.use_kl:  # RESCALED_KL: T * L_t, trained with --schedule_sampler loss-second-moment (README)
        loss = LossConfig(type="vlb", timestep_sampling="loss_aware")
    elif f.learn_sigma:  # mse + vb, the vb term scaled by T / 1000 when rescale_learned_sigmas (RESCALED_MSE): L_hybrid
        loss = LossConfig(type="hybrid", vlb_weight=0.001 if f.rescale_learned_sigmas else 1.0 / f.diffusion_steps)
    else:
        loss = LossConfig(type="simple")
    data = DataConfig(name=f"improved-diffusion:{name}", image_size=f.image_size, channels="RGB")
    cfg = apply_overrides(RunConfig(data=data, model=model, process=process, denoiser=denoiser, loss=loss), list(overrides))
    touched = {o.partition("=")[0].strip() for o in overrides}
    if f.rescale_timesteps and "model.timestep_scale" not in touched:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, timestep_scale=1000.0 / cfg.process.T))
    if "data.image_size" not in touched:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, image_size=cfg.model.image_size))
    return cfg


def _improved_preset(preset: str) -> ImprovedFlags:
    if preset not in IMPROVED_PRESETS:
        raise UserError(f"unknown improved-diffusion preset '{preset}'; valid: {', '.join(IMPROVED_PRESETS)}")
    return IMPROVED_PRESETS[preset]


def import_improved_checkpoint(checkpoint: str | Path, out: str | Path, *, preset: str | None = None,
                               overrides: Sequence[str] = (), force: bool = False) -> Path:
    """Write a difflab run folder `out` holding an improved-diffusion model checkpoint; returns `out`.

    The preset defaults to that of the release with the checkpoint's file name (IMPROVED_RELEASES); weights go to
    model.* and ema.* of checkpoints/step-0, as for guided-diffusion. Refuses an existing run unless `force`.
    """
    from difflab.runs import prepare_run_dir

    checkpoint, out = Path(checkpoint), Path(out)
    if preset is None:
        if checkpoint.name not in IMPROVED_RELEASES:
            raise UserError(f"{checkpoint.name} is not a released improved-diffusion file name; give --preset "
                            f"(one of {', '.join(IMPROVED_PRESETS)}) and --set model.* for other flags")
        preset = IMPROVED_RELEASES[checkpoint.name]
    cfg = improved_run_config(_improved_preset(preset), name=preset, overrides=overrides)
    prepare_run_dir(out, resume=False, force=force, check_only=True)  # refuse before reading gigabytes; --force moves nothing yet
    state = read_state_dict(checkpoint)
    problem = state_dict_mismatch(state, state_shapes("model", cfg.model))
    if problem:
        # Shapes cannot tell heads, schedules or timestep scaling apart, so the hint names presets, never guesses flags.
        fits = [n for n, f in IMPROVED_PRESETS.items() if not state_dict_mismatch(state, state_shapes("model", improved_run_config(f).model))]
        hint = ("it matches --preset " + " / ".join(fits)) if fits else \
            "choose the --preset of the released model, or --set model.* to the flags it was trained with (docs/import.md)"
        raise UserError(f"{checkpoint} does not fit the model config: {problem}; {hint}")
    return write_run(out, cfg, state, "model", {"from": "improved-diffusion", "checkpoint": checkpoint.name, "preset": preset,
                                                 "bytes": checkpoint.stat().st_size}, force=force)


def describe_improved_releases() -> list[str]:
    """One line per released improved-diffusion checkpoint: file, preset, T, schedule, timestep scaling."""
    lines = []
    for name, preset in IMPROVED_RELEASES.items():
        f = IMPROVED_PRESETS[preset]
        lines.append(f"{name}: --preset {preset} (T {f.diffusion_steps}, {f.noise_schedule}, "
                     f"{'t * 1000 / T' if f.rescale_timesteps else 'integer t'}{', class-conditional' if f.class_cond else ''})")
    return lines


__all__ = ["IMPROVED_PRESETS", "IMPROVED_RELEASES", "ImprovedFlags", "describe_improved_releases", "import_improved_checkpoint",
           "improved_run_config"]
