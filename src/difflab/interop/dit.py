"""Import facebookresearch/DiT checkpoints (Peebles & Xie 2023) into difflab run folders: `difflab import dit`.

The released `.pt` files (DiT-XL-2-256x256.pt, DiT-XL-2-512x512.pt) are plain state dicts whose keys are the module
names of DiT's `DiT`, which difflab's `DiT` shares (nets/dit.py), so an import is: read the tensors without
unpickling code (guided_diffusion.read_state_dict), check every key and shape against a DiT preset (and say which
size the file looks like when it is another), and write a run folder that samples as DiT does: VP linear schedule,
T = 1000, betas 1e-4 .. 0.02, eps prediction with learned_range variance, no clipping of x0 (latents are unbounded),
250 DDPM steps spread over 0..999 (DiT's sample.py --num-sampling-steps 250). Given an autoencoder run (an imported
sd-vae-ft-mse: `difflab import diffusers-vae`), the run is a latent run whose samples decode into images.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import Tensor

from difflab.errors import UserError
from difflab.interop.guided_diffusion import read_state_dict, state_dict_mismatch, write_run
from difflab.nets import DIT_PRESETS, DiT, DiTConfig, dit_preset
from difflab.nets.embeddings import sincos_2d_position_embedding

# The README's released files: name -> difflab preset.
DIT_RELEASES: Mapping[str, str] = {"DiT-XL-2-256x256.pt": "dit-xl-2", "DiT-XL-2-512x512.pt": "dit-xl-2-512"}
# DiT's sample.py decodes vae.decode(z / 0.18215): Stable Diffusion's VAE latent scale, which the released models learned.
SD_VAE_SCALE = 0.18215
EXPECT = "a facebookresearch/DiT state dict (e.g. DiT-XL-2-256x256.pt)"


def dit_shapes(cfg: DiTConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only: nothing is allocated, even for DiT-XL/2
        return {k: tuple(v.shape) for k, v in DiT(cfg).state_dict().items()}


def matching_dit_presets(state: Mapping[str, Tensor]) -> list[str]:
    """Every DiT preset whose network has exactly the checkpoint's keys and shapes."""
    return [name for name, cfg in DIT_PRESETS.items() if not state_dict_mismatch(state, dit_shapes(cfg))]


def looks_like(state: Mapping[str, Tensor]) -> str:
    """What size of DiT the tensors are: a preset's name, else the dimensions read off the shapes."""
    fits = matching_dit_presets(state)
    if fits:
        return " / ".join(fits) + f" (--preset {fits[0]})"
    proj, pos = state.get("x_embedder.proj.weight"), state.get("pos_embed")
    if proj is None or proj.ndim != 4 or pos is None or pos.ndim != 3:
        return "no DiT (it has no x_embedder.proj.weight / pos_embed of DiT's shapes)"
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    hidden, channels, p = proj.shape[0], proj.shape[1], proj.shape[-1]
    side = round(pos.shape[1] ** 0.5) * p
    return (f"a DiT of depth {depth}, hidden_size {hidden}, patch_size {p} on {channels}x{side}x{side} inputs, which is no "
            f"released size (give --preset and --set model.depth=... etc.)")


def check_dit_state(state: Mapping[str, Tensor], cfg: DiTConfig, what: str, preset: str) -> None:
    """One-line UserError unless `state` has exactly the keys and shapes of `cfg` and DiT's fixed position table."""
    problem = state_dict_mismatch(state, dit_shapes(cfg))
    if problem:
        raise UserError(f"{what} is not a {preset} checkpoint: it looks like {looks_like(state)}; {problem}")
    table = sincos_2d_position_embedding(cfg.hidden_size, cfg.grid)[None]
    if not torch.allclose(state["pos_embed"].float(), table, atol=1e-5):  # a fixed table: another one means another model
        raise UserError(f"{what}: pos_embed is not DiT's fixed 2-D sin-cos table for a {cfg.grid}x{cfg.grid} token grid; give {EXPECT}")


def _pick_preset(checkpoint: Path, preset: str | None, state: Mapping[str, Tensor] | None) -> str:
    if preset is not None:
        dit_preset(preset)  # the error lists the valid ones
        return preset
    if checkpoint.name in DIT_RELEASES:
        return DIT_RELEASES[checkpoint.name]
    fits = matching_dit_presets(state or {})
    if len(fits) == 1:  # a renamed release: its shapes say which
        return fits[0]
    raise UserError(f"{checkpoint.name} is not a released DiT file name ({', '.join(DIT_RELEASES)}) and its shapes match no single "
                    f"DiT preset; give --preset (one of {', '.join(DIT_PRESETS)})")


def dit_run_config(preset: str, overrides: Sequence[str] = ()):
    """The DiTRunConfig of an imported DiT: the preset's network sampled with DiT's diffusion (module docstring)."""
    from difflab.configs import apply_overrides
    from difflab.data import DataConfig
    from difflab.denoiser import DenoiserConfig
    from difflab.process import ProcessConfig
    from difflab.runs import DiTRunConfig, SampleConfig
    from difflab.training.config import TrainConfig

    model = dit_preset(preset)
    cfg = DiTRunConfig(
        data=DataConfig(name=f"dit:{preset}", image_size=model.image_size),  # records the origin; imported runs sample, they do not resume
        model=model,
        process=ProcessConfig(kind="vp", schedule="linear", T=1000, beta_start=1e-4, beta_end=0.02),
        denoiser=DenoiserConfig(parameterization="eps", var_type="learned_range" if model.learn_sigma else "fixed_large", clip_x0=False),
        # How DiT was trained (train.py): recorded, and label_dropout says the null label was trained (class_dropout_prob).
        train=TrainConfig(lr=1e-4, batch_size=256, ema_rate=0.9999, label_dropout=0.1 if model.class_dropout_null else 0.0),
        sample=SampleConfig(sampler="ddpm", steps=250, spacing="linspace", grid_size=16),
    )
    cfg = apply_overrides(cfg, list(overrides))
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, image_size=cfg.model.image_size))


def with_autoencoder(cfg, autoencoder: str | Path):
    """`cfg` as a latent run on the autoencoder run `autoencoder` (e.g. an imported sd-vae-ft-mse): its folder and
    SHA-256 recorded now (a later change is refused), its latents checked against the DiT's input, and the latent
    scale DiT was trained with (SD_VAE_SCALE) unless latent.scale_factor was set."""
    from difflab.runs import resolve_config
    from difflab.runs.latent import check_autoencoder_run, check_latent_shape

    latent = dataclasses.replace(cfg.latent, autoencoder=str(autoencoder))
    folder, digest = check_autoencoder_run(latent)
    m = cfg.model
    check_latent_shape(resolve_config(folder).model.latent_shape, (m.in_channels, m.image_size, m.image_size), folder)
    latent = dataclasses.replace(latent, autoencoder=str(folder.resolve()), autoencoder_sha256=digest,
                                 scale_factor=latent.scale_factor or SD_VAE_SCALE)
    return dataclasses.replace(cfg, latent=latent)


def import_dit_checkpoint(checkpoint: str | Path, out: str | Path, *, preset: str | None = None, overrides: Sequence[str] = (),
                          autoencoder: str | Path | None = None, force: bool = False) -> Path:
    """Write a difflab run folder `out` holding a DiT checkpoint (model and EMA weights alike); returns `out`.

    The preset is --preset, else the release's with this file name, else the one preset the shapes fit. With
    `autoencoder` (an autoencoder run folder) the run decodes its samples into images (with_autoencoder). Refuses a
    folder that already holds a run unless `force` (then the old run is parked in OUT/.replaced until the new one is
    written), and refuses before reading the file."""
    from difflab.runs import prepare_run_dir

    checkpoint, out = Path(checkpoint), Path(out)
    if preset is not None or checkpoint.name in DIT_RELEASES:
        cfg = dit_run_config(_pick_preset(checkpoint, preset, None), overrides)  # a bad --preset / --set fails before any reading
        if autoencoder is not None:
            with_autoencoder(cfg, autoencoder)
    prepare_run_dir(out, resume=False, force=force, check_only=True)
    state = read_state_dict(checkpoint, expect=EXPECT)
    preset = _pick_preset(checkpoint, preset, state)
    cfg = dit_run_config(preset, overrides)
    check_dit_state(state, cfg.model, str(checkpoint), preset)
    if autoencoder is not None:
        cfg = with_autoencoder(cfg, autoencoder)
    return write_run(out, cfg, state, "model", {"from": "dit", "checkpoint": checkpoint.name, "bytes": checkpoint.stat().st_size}, force=force)
