"""Map a diffusers `UNet2DModel` state dict (DDPM layout, Ho et al. 2020) onto difflab's ADM-named UNet.

guided-diffusion state dicts need no mapping: difflab's module names are guided-diffusion's.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from difflab.errors import UserError
from difflab.nets.config import UNetConfig

# diffusers' UNet2DModel arguments of the google/ddpm-cifar10-32 layout (Ho et al. 2020), the counterpart of difflab's
# `ddpm-cifar10` preset; for building a reference model in tests and benchmarks (diffusers is not a dependency).
DDPM_CIFAR10_DIFFUSERS = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=2,
    norm_num_groups=32,
    norm_eps=1e-6,
    time_embedding_type="positional",
    flip_sin_to_cos=False,
    freq_shift=1,
    downsample_padding=0,
)

# diffusers ResnetBlock2D -> ADM ResBlock
_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
# Older diffusers checkpoints (the deprecated AttentionBlock) name the projections differently.
_ATTN_ALIASES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


class _Source:
    """The diffusers tensors, remembering which ones were consumed so leftovers can be reported."""

    def __init__(self, state_dict: Mapping[str, Tensor]):
        self.tensors: dict[str, Tensor] = {}
        for key, value in state_dict.items():
            parts = key.split(".")
            if len(parts) >= 2 and parts[-2] in _ATTN_ALIASES:
                key = ".".join(parts[:-2] + [_ATTN_ALIASES[parts[-2]], parts[-1]])
            self.tensors[key] = value
        self.used: set[str] = set()

    def take(self, key: str) -> Tensor:
        if key not in self.tensors:
            raise UserError(f"diffusers state dict has no '{key}'; it does not match this UNetConfig's layout")
        self.used.add(key)
        return self.tensors[key]

    def has(self, prefix: str) -> bool:
        return any(k.startswith(prefix + ".") for k in self.tensors)


def _copy(src: _Source, out: dict[str, Tensor], theirs: str, ours: str) -> None:
    for suffix in ("weight", "bias"):
        if f"{theirs}.{suffix}" in src.tensors:
            out[f"{ours}.{suffix}"] = src.take(f"{theirs}.{suffix}")


def _resnet(src: _Source, out: dict[str, Tensor], theirs: str, ours: str) -> None:
    for d_name, a_name in _RESNET.items():
        _copy(src, out, f"{theirs}.{d_name}", f"{ours}.{a_name}")


def _attention(src: _Source, out: dict[str, Tensor], theirs: str, ours: str, heads: int, new_order: bool) -> None:
    """to_q/to_k/to_v (C, C) Linear weights -> one (3C, C, 1) qkv conv in the head layout ADM's attention expects."""
    _copy(src, out, f"{theirs}.group_norm", f"{ours}.norm")
    for suffix in ("weight", "bias"):
        q, k, v = (src.take(f"{theirs}.to_{n}.{suffix}") for n in "qkv")
        stacked = torch.stack([q, k, v])  # (3, C, ...) with C = heads * d, head-major as diffusers splits it
        c = q.shape[0]
        stacked = stacked.reshape(3, heads, c // heads, *q.shape[1:])
        if not new_order:  # legacy order: per head [q_h | k_h | v_h]
            stacked = stacked.transpose(0, 1)
        qkv = stacked.reshape(3 * c, *q.shape[1:])
        out[f"{ours}.qkv.{suffix}"] = qkv[..., None] if suffix == "weight" else qkv
        proj = src.take(f"{theirs}.to_out.0.{suffix}")
        out[f"{ours}.proj_out.{suffix}"] = proj[..., None] if suffix == "weight" else proj


def unet_state_dict_from_diffusers(diffusers_state_dict: Mapping[str, Tensor], cfg: UNetConfig) -> dict[str, Tensor]:
    """Rename (and fuse q,k,v of) a diffusers UNet2DModel state dict for `UNet(cfg)`; load with strict=True.

    The diffusers model must have the same layout: block_out_channels = model_channels * channel_mult,
    Attn*Block2D exactly at the levels in cfg.attention_resolutions, layers_per_block = num_res_blocks,
    conv down/upsamplers (resblock_updown false), and heads = channels // attention_head_dim equal to
    cfg's heads (attention_head_dim null = one head; more than one head needs use_new_attention_order).
    """
    if cfg.resblock_updown or not cfg.conv_resample:
        raise UserError("diffusers' DDPM layout uses conv down/upsamplers; set resblock_updown false and conv_resample true")
    src = _Source(diffusers_state_dict)
    out: dict[str, Tensor] = {}
    _copy(src, out, "time_embedding.linear_1", "time_embed.0")
    _copy(src, out, "time_embedding.linear_2", "time_embed.2")
    if cfg.num_classes is not None:
        _copy(src, out, "class_embedding", "label_emb")
    _copy(src, out, "conv_in", "input_blocks.0.0")

    n = 1  # input_blocks index; 0 is conv_in
    last = len(cfg.channel_mult) - 1
    for level, (res, ch) in enumerate(zip(cfg.resolutions, cfg.level_channels)):
        for j in range(cfg.num_res_blocks):
            _resnet(src, out, f"down_blocks.{level}.resnets.{j}", f"input_blocks.{n}.0")
            if res in cfg.attention_resolutions:
                heads = cfg.heads_for(ch, False)
                _attention(src, out, f"down_blocks.{level}.attentions.{j}", f"input_blocks.{n}.1", heads, cfg.use_new_attention_order)
            n += 1
        if level != last:
            _copy(src, out, f"down_blocks.{level}.downsamplers.0.conv", f"input_blocks.{n}.0.op")
            n += 1

    ch = cfg.level_channels[-1]
    _resnet(src, out, "mid_block.resnets.0", "middle_block.0")
    if cfg.mid_attention:
        _attention(src, out, "mid_block.attentions.0", "middle_block.1", cfg.heads_for(ch, False), cfg.use_new_attention_order)
    _resnet(src, out, "mid_block.resnets.1", f"middle_block.{2 if cfg.mid_attention else 1}")

    n = 0
    for u, level in enumerate(reversed(range(len(cfg.channel_mult)))):
        res, ch = cfg.resolutions[level], cfg.level_channels[level]
        attn = res in cfg.attention_resolutions
        for j in range(cfg.num_res_blocks + 1):
            _resnet(src, out, f"up_blocks.{u}.resnets.{j}", f"output_blocks.{n}.0")
            if attn:
                heads = cfg.heads_for(ch, True)
                _attention(src, out, f"up_blocks.{u}.attentions.{j}", f"output_blocks.{n}.1", heads, cfg.use_new_attention_order)
            if level and j == cfg.num_res_blocks:
                _copy(src, out, f"up_blocks.{u}.upsamplers.0.conv", f"output_blocks.{n}.{2 if attn else 1}.conv")
            n += 1

    _copy(src, out, "conv_norm_out", "out.0")
    _copy(src, out, "conv_out", "out.2")

    leftover = sorted(set(src.tensors) - src.used)
    if leftover:
        raise UserError(
            f"diffusers state dict has {len(leftover)} tensors this UNetConfig has no place for (first: '{leftover[0]}'); "
            "check channel_mult, num_res_blocks, attention_resolutions and num_classes"
        )
    return out
