"""Latent runs (Rombach et al. 2022): a diffusion backbone trained on an autoencoder run's latents, sampled by decoding.

A backbone config with a `latent` section (runs/latent_config.py) names the autoencoder run. When training starts,
`prepare_latent_data` checks the run (present, an autoencoder, unchanged: SHA-256 of its config.json and newest
checkpoint), checks that its latent shape is the backbone's, encodes the data set once (the posterior means, cached in
AE/latents/ keyed by the autoencoder's hash and the data config) and measures the scale factor 1 / std(z). The backbone
then trains on scale_factor * z like on any images. `latent_decoder` is the way back, for every sampling command.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from difflab.configs import to_dict
from difflab.data import ImageData
from difflab.errors import UserError
from difflab.runs.latent_config import LatentConfig

LATENT_CACHE = "latents"  # the autoencoder run's sub-folder of cached encodings
_CHUNK = 1 << 20


def autoencoder_sha256(folder: Path) -> str:
    """SHA-256 of an autoencoder run's config.json and its newest checkpoint (.safetensors and .json): what a latent
    run depends on. The latents cache is not hashed (it is derived from these)."""
    from difflab.training.checkpoint import list_checkpoints

    ckpts = list_checkpoints(folder / "checkpoints")
    if not ckpts:
        raise UserError(f"the autoencoder run {folder} has no checkpoint: train it first (difflab train --config digits32-ae --out {folder})")
    h = hashlib.sha256()
    for p in (folder / "config.json", ckpts[-1].with_suffix(".safetensors"), ckpts[-1].with_suffix(".json")):
        h.update(p.name.encode())
        if p.is_file():
            with open(p, "rb") as f:
                while block := f.read(_CHUNK):
                    h.update(block)
    return h.hexdigest()


def check_autoencoder_run(latent: LatentConfig) -> tuple[Path, str]:
    """(folder, SHA-256) of the latent section's autoencoder run; one-line errors when it is missing, of another kind,
    or changed since the latent run recorded its hash."""
    from difflab.runs.folder import run_kind

    folder = Path(latent.autoencoder).expanduser()
    if not folder.is_dir():
        raise UserError(f"the autoencoder run {folder} (latent.autoencoder) is missing: train it (difflab train --config digits32-ae "
                        f"--out {folder}) or import one (difflab import diffusers-vae DIR --out {folder})")
    kind = run_kind(folder)
    if kind != "autoencoder":
        raise UserError(f"latent.autoencoder {folder} is {'not a run' if kind is None else f'a {kind} run'}, not an autoencoder run")
    digest = autoencoder_sha256(folder)
    if latent.autoencoder_sha256 and digest != latent.autoencoder_sha256:
        raise UserError(f"the autoencoder run {folder} changed since this latent run was trained on it (SHA-256 {digest[:12]}, "
                        f"recorded {latent.autoencoder_sha256[:12]}): restore that run, or train the latent run again")
    return folder, digest


def load_autoencoder(latent: LatentConfig, device: str | torch.device = "cpu"):
    """The checked autoencoder run's AutoencoderKL (EMA weights, eval mode) on `device`, and its run config."""
    from difflab.runs.autoencoder import load_autoencoder_run

    folder, _ = check_autoencoder_run(latent)
    return load_autoencoder_run(folder, device)


def latent_image_shape(latent: LatentConfig) -> tuple[int, int, int]:
    """(C, H, W) of the images a latent run decodes to: its autoencoder run's image shape (read from its config.json)."""
    from difflab.configs import from_dict
    from difflab.runs.autoencoder import AutoencoderRunConfig

    folder = Path(latent.autoencoder).expanduser()
    if not (folder / "config.json").is_file():
        check_autoencoder_run(latent)  # the one-line error of a missing run
    data = json.loads((folder / "config.json").read_text())
    m = from_dict(AutoencoderRunConfig, {**data, "kind": "autoencoder"}).model
    return (m.in_channels, m.image_size, m.image_size)


@torch.no_grad()
def encode(ae, x: Tensor, batch_size: int = 64) -> Tensor:
    """Means of q(z|x) (N, L, h, w), float32 on the CPU, for images x (N, C, H, W) in [-1, 1], batch by batch."""
    dev = next(ae.parameters()).device
    return torch.cat([ae.encode(x[i:i + batch_size].to(dev)).mean.float().cpu() for i in range(0, len(x), batch_size)])


def cached_latents(folder: Path, digest: str, data_cfg, ae, x: Tensor) -> Tensor:
    """encode(ae, x), read from folder/latents/<key>.safetensors when that file holds the same images' latents, else
    computed and written there (atomically). The key is a hash of the autoencoder's SHA-256 and the data config."""
    from safetensors.torch import load_file, save

    from difflab.data.atomic import atomic_write

    key = hashlib.sha256((digest + json.dumps(to_dict(data_cfg), sort_keys=True)).encode()).hexdigest()[:20]
    path = folder / LATENT_CACHE / f"{key}.safetensors"
    if path.is_file():
        try:
            z = load_file(str(path))["z"]
            if len(z) == len(x):
                return z
        except Exception:  # a damaged cache file is recomputed, never trusted
            pass
    z = encode(ae, x)
    blob = save({"z": z.contiguous()}, metadata={"autoencoder_sha256": digest, "data": json.dumps(to_dict(data_cfg))})
    atomic_write(path, lambda f: f.write(blob))
    return z


def check_latent_shape(latent_shape: tuple[int, ...], backbone_shape: tuple[int, ...], folder: Path) -> None:
    """One-line error when the autoencoder's latents (L, h, w) are not what the backbone takes (C, H, W)."""
    if tuple(latent_shape) != tuple(backbone_shape):
        a, b = "x".join(map(str, latent_shape)), "x".join(map(str, backbone_shape))
        raise UserError(f"the autoencoder {folder} makes {a} latents but the backbone takes {b}: set the model's channels and image "
                        f"size to the latent's (e.g. --set model.in_channels={latent_shape[0]} --set model.out_channels={latent_shape[0]} "
                        f"--set model.image_size={latent_shape[-1]}), or use another autoencoder")


def prepare_latent_data(cfg, data: ImageData, device: torch.device, backbone_shape: tuple[int, int, int]) -> tuple[object, ImageData]:
    """(cfg with latent.autoencoder_sha256 and latent.scale_factor filled in, the training latents scale_factor * z)
    for a latent run; (cfg, data) unchanged in pixel space."""
    latent: LatentConfig = cfg.latent
    if not latent.enabled:
        return cfg, data
    from difflab.runs.autoencoder import load_autoencoder_run

    folder, digest = check_autoencoder_run(latent)
    ae, ae_cfg = load_autoencoder_run(folder, device)
    check_latent_shape(ae_cfg.model.latent_shape, backbone_shape, folder)
    want = (ae_cfg.model.in_channels, ae_cfg.model.image_size, ae_cfg.model.image_size)
    if tuple(data.x.shape[1:]) != want:
        got = "x".join(map(str, data.x.shape[1:]))
        raise UserError(f"data are {got} but the autoencoder {folder} encodes {'x'.join(map(str, want))} images: "
                        f"set data.image_size / data.channels to the autoencoder's")
    z = cached_latents(folder, digest, cfg.data, ae, data.x)
    # LDM's scale_by_std: one number so that the latents the backbone sees have unit variance, like the images it was
    # designed for; measured once and stored, so resume, sampling and evaluation use the same one.
    scale = latent.scale_factor or 1.0 / float(z.double().std())
    # The folder is stored absolute, so that the run samples from any working directory.
    cfg = dataclasses.replace(cfg, latent=dataclasses.replace(latent, autoencoder=str(folder.resolve()), autoencoder_sha256=digest,
                                                              scale_factor=scale))
    return cfg, ImageData(z * scale, data.y, data.num_classes, data.class_names)


def latent_decoder(latent: LatentConfig, device: str | torch.device = "cpu") -> Callable[[Tensor], Tensor] | None:
    """z -> images: D(z / scale_factor) with the (checked) autoencoder on `device`; None in pixel space."""
    if not latent.enabled:
        return None
    if not latent.scale_factor > 0:
        raise UserError("latent.scale_factor is 0: this latent run never started training (it is measured then); train it first")
    ae, _ = load_autoencoder(latent, device)
    scale = latent.scale_factor

    @torch.no_grad()
    def decode(z: Tensor) -> Tensor:
        return ae.decode(z.to(next(ae.parameters()).device, torch.float32) / scale).to(z.device)

    return decode
