"""Networks: plain nn.Modules with forward(x, t, y=None) and a typed config; no diffusion math here."""

from difflab.nets.config import UNetConfig
from difflab.nets.presets import UNET_PRESETS, build_unet, count_parameters, summarize_unet, unet_preset
from difflab.nets.unet import UNet

__all__ = [
    "UNET_PRESETS",
    "UNet",
    "UNetConfig",
    "build_unet",
    "count_parameters",
    "summarize_unet",
    "unet_preset",
]
