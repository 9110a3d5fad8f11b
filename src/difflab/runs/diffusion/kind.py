"""The diffusion run kind: a U-Net trained with a diffusion loss, loaded back as a Denoiser (docs/architecture.md)."""

from __future__ import annotations

import torch
from torch import nn

from difflab.data import ImageData
from difflab.denoiser import ModelDenoiser
from difflab.errors import UserError
from difflab.nets import build_unet
from difflab.process import build_process
from difflab.runs.diffusion.config import RunConfig
from difflab.runs.diffusion.presets import RUN_PRESETS
from difflab.runs.diffusion.task import DiffusionTask
from difflab.runs.kind import RunKind
from difflab.runs.latent import latent_decoder, latent_image_shape, prepare_latent_data


def check_data_fits_model(cfg: RunConfig, data: ImageData) -> None:
    """One-line errors when the images or labels do not fit the U-Net."""
    m, x, num_classes = cfg.model, data.x, data.num_classes
    if x.shape[1] != cfg.data_channels or x.shape[-1] != m.image_size:  # data_channels: in_channels less an image condition's
        raise UserError(
            f"data are {x.shape[1]}x{x.shape[-2]}x{x.shape[-1]} but model expects {cfg.data_channels}x{m.image_size}x{m.image_size}: "
            f"set model.in_channels/out_channels/image_size, or data.image_size / data.channels"
        )
    if m.num_classes is not None and num_classes is None:
        raise UserError(f"model.num_classes is {m.num_classes} but the data have no labels: use labelled data or set model.num_classes=null")
    if m.num_classes is not None and num_classes is not None and num_classes > m.num_classes:
        raise UserError(f"the data have {num_classes} classes but model.num_classes is {m.num_classes}: set model.num_classes={num_classes}")


def _task(cfg: RunConfig, model: nn.Module, device: torch.device) -> DiffusionTask:
    return DiffusionTask(cfg, model, build_process(cfg.process), device)


def _image_shape(cfg: RunConfig) -> tuple[int, int, int]:
    """(C, H, W) of the images the run makes: the U-Net's own, or for a latent run its autoencoder's images."""
    if cfg.latent.enabled:
        return latent_image_shape(cfg.latent)
    return (cfg.data_channels, cfg.model.image_size, cfg.model.image_size)


def _denoiser(cfg: RunConfig, net: nn.Module) -> ModelDenoiser:
    return ModelDenoiser(net, build_process(cfg.process), cfg.denoiser)


KIND = RunKind(
    name="diffusion",
    summary="a diffusion model (DDPM/DDIM/NCSN/ADM U-Net) sampled through a Denoiser",
    config_class=RunConfig,
    presets=RUN_PRESETS,
    build_model=lambda cfg: build_unet(cfg.model),
    build_task=_task,
    data_config=lambda cfg: cfg.data,
    check_data=check_data_fits_model,
    uses_labels=lambda cfg: cfg.model.num_classes is not None,
    # Training keys may change on resume (e.g. more steps); the model and the math may not.
    frozen=("kind", "data", "model", "process", "denoiser", "loss", "condition", "latent"),
    changeable="train.* and sample.*",
    train_hint="difflab train --config digits",
    image_shape=_image_shape,
    denoiser=_denoiser,
    prepare_data=lambda cfg, data, device: prepare_latent_data(cfg, data, device, (cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size)),
    decoder=lambda cfg, device: latent_decoder(cfg.latent, device),
)
