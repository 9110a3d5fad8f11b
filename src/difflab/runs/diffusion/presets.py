"""The diffusion run presets (`difflab config NAME`): the digits demo, its class-conditional, restoration and NCSN variants."""

from __future__ import annotations

import dataclasses

from difflab.data import DataConfig
from difflab.nets import unet_preset
from difflab.process import ProcessConfig
from difflab.runs.diffusion.config import RunConfig, SampleConfig
from difflab.training.config import TrainConfig


def _digits() -> RunConfig:
    """The CPU demo: a small U-Net on 8x8 digits, T=1000 linear, eps-prediction, L_simple."""
    return RunConfig(
        data=DataConfig(name="digits", split="train"),
        model=unet_preset("digits"),
        process=ProcessConfig(kind="vp", schedule="linear", T=1000),
        train=TrainConfig(steps=3000, batch_size=128, lr=1e-3, warmup_steps=100, lr_schedule="cosine",
                          ema_rate=0.995, grad_clip=1.0, log_every=50, checkpoint_every=500, sample_every=1000),
        sample=SampleConfig(sampler="ddim", steps=50, grid_size=100),
    )


def _digits_cond() -> RunConfig:
    """`digits` with label dropout 0.1 (Ho & Salimans 2022): one class-conditional model that also predicts
    unconditionally through the null label, for classifier-free guidance and for classifier guidance of the
    unconditional prediction."""
    base = _digits()
    return dataclasses.replace(base, train=dataclasses.replace(base.train, label_dropout=0.1))


RUN_PRESETS = {"digits": _digits, "digits-cond": _digits_cond}


def _digits_restoration(kind: str, in_channels: int, out_channels: int = 1, data: str = "digits", **condition) -> RunConfig:
    """An image-conditional `digits` network (no class labels) whose input is [x_t, y]: docs/restoration.md, 2,000 steps."""
    from difflab.restoration.conditioning import ConditionConfig

    base = _digits()
    return dataclasses.replace(
        base,
        data=DataConfig(name=data, split="train"),
        model=dataclasses.replace(base.model, in_channels=in_channels, out_channels=out_channels, num_classes=None, class_dropout_null=False),
        train=dataclasses.replace(base.train, steps=2000),
        sample=dataclasses.replace(base.sample, grid_size=81),
        condition=ConditionConfig(kind=kind, **condition),
    )


def _digits_sr() -> RunConfig:
    """Super-resolution 4x4 -> 8x8 (SR3-style): y = the 2x average-pooled digit, nearest-up-sampled back to 8x8."""
    return _digits_restoration("sr", in_channels=2, factor=2, upsample="nearest")


def _digits_color() -> RunConfig:
    """Colorization of the synthetic tinted digits (data/tinted.py): y = the 1-channel luma of the colour digit."""
    return _digits_restoration("colorize", in_channels=4, out_channels=3, data="digits-color", gray_channels=1)


def _digits_inpaint() -> RunConfig:
    """Inpainting as a trained task (Palette-style): y = [digit with a random rectangular hole, the mask]."""
    return _digits_restoration("inpaint", in_channels=3, mask="random")


RUN_PRESETS.update({"digits-sr": _digits_sr, "digits-color": _digits_color, "digits-inpaint": _digits_inpaint})  # issue 4, restoration


def _digits_ncsn() -> RunConfig:
    """A noise-conditioned score network (Song & Ermon 2019) on digits: VE process, geometric sigmas 0.01..10.

    sigma_max = 10 covers the largest distance between two training digits (9.6; Song & Ermon 2020,
    technique 1); the eps objective on VE is denoising score matching with lambda(sigma) = sigma^2.
    Sample it with `langevin` or `pc`.
    """
    base = _digits()
    return dataclasses.replace(
        base,
        model=dataclasses.replace(base.model, num_classes=None, class_dropout_null=False),
        process=ProcessConfig(kind="ve", T=232, sigma_min=0.01, sigma_max=10.0),
        sample=dataclasses.replace(base.sample, sampler="pc", steps=100, spacing="linspace"),
    )


RUN_PRESETS["digits-ncsn"] = _digits_ncsn  # issue 6, the score view


def _digits32_latent() -> RunConfig:
    """Latent diffusion (Rombach et al. 2022) on the digits upscaled to 32x32: `digits-cond`'s U-Net on the 8x8x4 latents
    of the f = 4 autoencoder trained with `difflab train --config digits32-ae --out runs/digits32-ae`."""
    from difflab.runs.latent_config import LatentConfig

    base = _digits_cond()
    return dataclasses.replace(
        base,
        data=DataConfig(name="digits", split="train", image_size=32),
        model=dataclasses.replace(base.model, in_channels=4, out_channels=4),
        denoiser=dataclasses.replace(base.denoiser, clip_x0=False),  # x0 are latents: unbounded
        latent=LatentConfig(autoencoder="runs/digits32-ae"),
    )


def _digits_latent() -> RunConfig:
    """Latent diffusion on the native 8x8 digits: a two-level U-Net on the 4x4x2 latents of a `digits-ae` run (runs/digits-ae)."""
    from difflab.runs.latent_config import LatentConfig

    base = _digits_cond()
    return dataclasses.replace(
        base,
        model=dataclasses.replace(base.model, image_size=4, in_channels=2, out_channels=2, channel_mult=(1, 3), attention_resolutions=(2,)),
        denoiser=dataclasses.replace(base.denoiser, clip_x0=False),
        latent=LatentConfig(autoencoder="runs/digits-ae"),
    )


RUN_PRESETS.update({"digits32-latent": _digits32_latent, "digits-latent": _digits_latent})  # issue 11, latent diffusion
