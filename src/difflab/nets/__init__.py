"""Networks: plain nn.Modules with forward(x, t, y=None) and a typed config; no diffusion math here."""

from difflab.nets.config import UNetConfig
from difflab.nets.dit import DiT, build_dit, summarize_dit
from difflab.nets.dit_config import DIT_PRESETS, DiTConfig, dit_preset
from difflab.nets.presets import UNET_PRESETS, build_unet, count_parameters, summarize_unet, unet_preset
from difflab.nets.unet import UNet

__all__ = [
    "DIT_PRESETS",
    "DiT",
    "DiTConfig",
    "UNET_PRESETS",
    "UNet",
    "UNetConfig",
    "build_dit",
    "build_unet",
    "count_parameters",
    "dit_preset",
    "summarize_dit",
    "summarize_unet",
    "unet_preset",
]
