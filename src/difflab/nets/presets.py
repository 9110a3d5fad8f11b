"""Named U-Net configurations (DDPM CIFAR-10, guided-diffusion's released ADM models, a tiny digits net) and helpers.

ADM flags are those of guided-diffusion's README (`MODEL_FLAGS`) through its `script_util.create_model`;
DDPM CIFAR-10 is the layout of Ho et al. 2020 App. B as ported to diffusers' `UNet2DModel`.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

import torch
from torch import nn

from difflab.errors import UserError
from difflab.nets.config import UNetConfig
from difflab.nets.dit import build_dit
from difflab.nets.dit_config import DIT_PRESETS, DiTConfig
from difflab.nets.unet import UNet


def _adm(image_size: int, **overrides) -> UNetConfig:
    """A guided-diffusion release: attention at 32,16,8 px, AdaGN, BigGAN up/down, learned sigmas, 3 -> 6 channels."""
    base = dict(
        image_size=image_size,
        in_channels=3,
        out_channels=3,
        model_channels=256,
        num_res_blocks=2,
        attention_resolutions=(32, 16, 8),
        num_head_channels=64,
        resblock_updown=True,
        use_scale_shift_norm=True,
        learn_sigma=True,
        norm_eps=1e-5,
    )
    base.update(overrides)
    return UNetConfig(**base)


UNET_PRESETS: Mapping[str, UNetConfig] = MappingProxyType(
    {
        # Tiny net for 8x8 digits (sklearn's): 1.5M parameters, ~10 GFLOP per batch-128 train step (~0.1 s of one CPU core).
        "digits": UNetConfig(
            image_size=8,
            in_channels=1,
            out_channels=1,
            model_channels=32,
            channel_mult=(1, 1, 3),  # the 8x8 level is the costly one: keep it narrow, put parameters at 2x2
            num_res_blocks=1,
            attention_resolutions=(4,),
            num_heads=2,
            use_new_attention_order=True,
            norm_groups=8,
            use_scale_shift_norm=True,
            num_classes=10,
            class_dropout_null=True,
        ),
        # Ho et al. 2020 CIFAR-10 model: 35.7M parameters, single-head attention at 16x16, no AdaGN.
        "ddpm-cifar10": UNetConfig(
            image_size=32,
            in_channels=3,
            out_channels=3,
            model_channels=128,
            channel_mult=(1, 2, 2, 2),
            num_res_blocks=2,
            attention_resolutions=(16,),
            num_heads=1,
            dropout=0.1,
            norm_eps=1e-6,
            time_embed_flip_sin_to_cos=False,
            time_embed_freq_shift=1,
            downsample_padding=0,
        ),
        # guided-diffusion 64x64_diffusion.pt: class-conditional ImageNet 64x64.
        "adm-imagenet64": _adm(
            64,
            model_channels=192,
            num_res_blocks=3,
            channel_mult=(1, 2, 3, 4),
            use_new_attention_order=True,
            dropout=0.1,
            num_classes=1000,
        ),
        # guided-diffusion 128x128_diffusion.pt: 4 heads rather than 64 channels per head.
        "adm-imagenet128": _adm(
            128, channel_mult=(1, 1, 2, 3, 4), num_heads=4, num_head_channels=-1, num_classes=1000
        ),
        # guided-diffusion 256x256_diffusion.pt.
        "adm-imagenet256": _adm(256, channel_mult=(1, 1, 2, 2, 4, 4), num_classes=1000),
        # guided-diffusion lsun_{bedroom,cat,horse}.pt (unconditional; 256x256_diffusion_uncond.pt has the same shapes).
        "adm-lsun256": _adm(256, channel_mult=(1, 1, 2, 2, 4, 4), dropout=0.1),
    }
)


def unet_preset(name: str) -> UNetConfig:
    """The UNetConfig of a named preset; an unknown name lists the valid ones."""
    try:
        return UNET_PRESETS[name]
    except KeyError:
        raise UserError(f"unknown U-Net preset '{name}'; valid: {', '.join(UNET_PRESETS)}") from None


def build_unet(cfg: UNetConfig | str) -> UNet:
    """A freshly initialised UNet from a config or a preset name (use `with torch.device(...)` to place it)."""
    return UNet(unet_preset(cfg) if isinstance(cfg, str) else cfg)


def count_parameters(model: nn.Module | UNetConfig | DiTConfig | str) -> int:
    """Number of parameters; configs and preset names (U-Net or DiT) are built on the meta device, so nothing is allocated."""
    if not isinstance(model, nn.Module):
        with torch.device("meta"):
            model = build_dit(model) if isinstance(model, DiTConfig) or model in DIT_PRESETS else build_unet(model)
    return sum(p.numel() for p in model.parameters())


def _heads(cfg: UNetConfig, ch: int, upsample: bool) -> str:
    heads = cfg.heads_for(ch, upsample)
    return f"{heads}x{ch // heads}"


def summarize_unet(cfg: UNetConfig | str) -> str:
    """A readable architecture summary: per level resolution, channels, blocks, attention heads; then the parameter count."""
    name = cfg if isinstance(cfg, str) else None
    if isinstance(cfg, str):
        cfg = unet_preset(cfg)
    cond = f"{cfg.num_classes} classes" + (" + null label" if cfg.class_dropout_null else "") if cfg.num_classes else "unconditional"
    lines = [
        f"UNet{' ' + repr(name) if name else ''}: {cfg.in_channels}x{cfg.image_size}x{cfg.image_size} -> "
        f"{cfg.output_channels}x{cfg.image_size}x{cfg.image_size}"
        f"{' (learn_sigma: eps and v)' if cfg.learn_sigma else ''}, {cond}",
        f"  embedding {cfg.emb_dim} ({'AdaGN scale-shift' if cfg.use_scale_shift_norm else 'added'}), "
        f"GroupNorm {cfg.norm_groups} groups eps {cfg.norm_eps:g}, dropout {cfg.dropout:g}"
        f"{', gradient checkpointing' if cfg.use_checkpoint else ''}",
    ]
    if cfg.resblock_updown:
        resample = "ResBlock (BigGAN)"
    elif cfg.conv_resample:
        resample = "conv" + (" (pad 0)" if cfg.downsample_padding == 0 else "")
    else:
        resample = "pool / nearest"
    header = f"  {'level':<7}{'resolution':<12}{'channels':<10}{'blocks down/up':<16}{'attention (heads x dim)':<25}resample"
    lines.append(header)
    last = len(cfg.channel_mult) - 1
    for level, (res, ch) in enumerate(zip(cfg.resolutions, cfg.level_channels)):
        attn = "-"
        if res in cfg.attention_resolutions:
            down, up = _heads(cfg, ch, False), _heads(cfg, ch, True)
            attn = down if down == up else f"{down} / {up}"
        lines.append(
            f"  {level:<7}{f'{res}x{res}':<12}{ch:<10}{f'{cfg.num_res_blocks} / {cfg.num_res_blocks + 1}':<16}"
            f"{attn:<25}{resample if level != last else '-'}"
        )
    ch = cfg.level_channels[-1]
    res = cfg.resolutions[-1]
    mid_attn = f" + attention {_heads(cfg, ch, False)}" if cfg.mid_attention else ""
    lines.append(f"  {'middle':<7}{f'{res}x{res}':<12}{ch:<10}ResBlock{mid_attn} + ResBlock")
    n = count_parameters(cfg)
    lines.append(f"  parameters: {n:,} ({n / 1e6:.1f} M)")
    return "\n".join(lines)
