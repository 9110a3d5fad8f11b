"""diffusers' `UNet2DModel` layout (DDPM, Ho et al. 2020) <-> difflab's ADM-named UNet: configs and state dicts, both ways.

One walk over the layout (`_layout`) names every pair of places (diffusers prefix, difflab prefix, what it is), and
both directions read it, so they cannot disagree. guided-diffusion state dicts need no mapping: difflab's module
names are guided-diffusion's. Folders (a pipeline's unet/ and scheduler/) are in interop/diffusers_folder.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

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


def _layout(cfg: UNetConfig) -> Iterator[tuple[str, str, str, int]]:
    """(diffusers prefix, difflab prefix, part, heads) for every part of a UNet of `cfg` in the DDPM layout:
    part "copy" (a layer with weight/bias), "resnet" (ResnetBlock2D <-> ResBlock) or "attention" (heads used)."""
    yield "time_embedding.linear_1", "time_embed.0", "copy", 0
    yield "time_embedding.linear_2", "time_embed.2", "copy", 0
    if cfg.num_classes is not None:
        yield "class_embedding", "label_emb", "copy", 0
    yield "conv_in", "input_blocks.0.0", "copy", 0
    n = 1  # input_blocks index; 0 is conv_in
    last = len(cfg.channel_mult) - 1
    for level, (res, ch) in enumerate(zip(cfg.resolutions, cfg.level_channels)):
        for j in range(cfg.num_res_blocks):
            yield f"down_blocks.{level}.resnets.{j}", f"input_blocks.{n}.0", "resnet", 0
            if res in cfg.attention_resolutions:
                yield f"down_blocks.{level}.attentions.{j}", f"input_blocks.{n}.1", "attention", cfg.heads_for(ch, False)
            n += 1
        if level != last:
            yield f"down_blocks.{level}.downsamplers.0.conv", f"input_blocks.{n}.0.op", "copy", 0
            n += 1
    ch = cfg.level_channels[-1]
    yield "mid_block.resnets.0", "middle_block.0", "resnet", 0
    if cfg.mid_attention:
        yield "mid_block.attentions.0", "middle_block.1", "attention", cfg.heads_for(ch, False)
    yield "mid_block.resnets.1", f"middle_block.{2 if cfg.mid_attention else 1}", "resnet", 0
    n = 0
    for u, level in enumerate(reversed(range(len(cfg.channel_mult)))):
        res, ch = cfg.resolutions[level], cfg.level_channels[level]
        attn = res in cfg.attention_resolutions
        for j in range(cfg.num_res_blocks + 1):
            yield f"up_blocks.{u}.resnets.{j}", f"output_blocks.{n}.0", "resnet", 0
            if attn:
                yield f"up_blocks.{u}.attentions.{j}", f"output_blocks.{n}.1", "attention", cfg.heads_for(ch, True)
            if level and j == cfg.num_res_blocks:
                yield f"up_blocks.{u}.upsamplers.0.conv", f"output_blocks.{n}.{2 if attn else 1}.conv", "copy", 0
            n += 1
    yield "conv_norm_out", "out.0", "copy", 0
    yield "conv_out", "out.2", "copy", 0


def _pairs(cfg: UNetConfig) -> Iterator[tuple[str, str, str, int]]:
    """The layout down to layers: resnets expand to their five layers, attention keeps its own part."""
    for theirs, ours, part, heads in _layout(cfg):
        if part == "resnet":
            for d_name, a_name in _RESNET.items():
                yield f"{theirs}.{d_name}", f"{ours}.{a_name}", "copy", 0
        elif part == "attention":
            yield f"{theirs}.group_norm", f"{ours}.norm", "copy", 0
            yield theirs, ours, "attention", heads
        else:
            yield theirs, ours, part, heads


def _check_layout(cfg: UNetConfig) -> None:
    if cfg.resblock_updown or not cfg.conv_resample:
        raise UserError("diffusers' DDPM layout uses conv down/upsamplers; set resblock_updown false and conv_resample true")


def _fuse_qkv(q: Tensor, k: Tensor, v: Tensor, heads: int, new_order: bool) -> Tensor:
    """to_q/to_k/to_v (C, C) weights or (C,) biases -> one (3C, ...) qkv in the head layout ADM's attention expects."""
    c = q.shape[0]
    stacked = torch.stack([q, k, v]).reshape(3, heads, c // heads, *q.shape[1:])  # head-major, as diffusers splits
    if not new_order:  # legacy order: per head [q_h | k_h | v_h]
        stacked = stacked.transpose(0, 1)
    return stacked.reshape(3 * c, *q.shape[1:])


def _split_qkv(qkv: Tensor, heads: int, new_order: bool) -> tuple[Tensor, Tensor, Tensor]:
    """The inverse of _fuse_qkv."""
    c = qkv.shape[0] // 3
    shape = (heads, 3, c // heads) if not new_order else (3, heads, c // heads)
    x = qkv.reshape(*shape, *qkv.shape[1:])
    if not new_order:
        x = x.transpose(0, 1)
    x = x.reshape(3, c, *qkv.shape[1:])
    return x[0], x[1], x[2]


def unet_state_dict_from_diffusers(diffusers_state_dict: Mapping[str, Tensor], cfg: UNetConfig) -> dict[str, Tensor]:
    """Rename (and fuse q,k,v of) a diffusers UNet2DModel state dict for `UNet(cfg)`; load with strict=True.

    The diffusers model must have the same layout: block_out_channels = model_channels * channel_mult,
    Attn*Block2D exactly at the levels in cfg.attention_resolutions, layers_per_block = num_res_blocks,
    conv down/upsamplers (resblock_updown false), and heads = channels // attention_head_dim equal to
    cfg's heads (attention_head_dim null = one head; more than one head needs use_new_attention_order).
    """
    _check_layout(cfg)
    src = _Source(diffusers_state_dict)
    out: dict[str, Tensor] = {}
    for theirs, ours, part, heads in _pairs(cfg):
        if part == "copy":
            for suffix in ("weight", "bias"):
                if f"{theirs}.{suffix}" in src.tensors:
                    out[f"{ours}.{suffix}"] = src.take(f"{theirs}.{suffix}")
            continue
        for suffix in ("weight", "bias"):
            qkv = _fuse_qkv(*(src.take(f"{theirs}.to_{n}.{suffix}") for n in "qkv"), heads, cfg.use_new_attention_order)
            out[f"{ours}.qkv.{suffix}"] = qkv[..., None] if suffix == "weight" else qkv
            proj = src.take(f"{theirs}.to_out.0.{suffix}")
            out[f"{ours}.proj_out.{suffix}"] = proj[..., None] if suffix == "weight" else proj
    leftover = sorted(set(src.tensors) - src.used)
    if leftover:
        raise UserError(
            f"diffusers state dict has {len(leftover)} tensors this UNetConfig has no place for (first: '{leftover[0]}'); "
            "check channel_mult, num_res_blocks, attention_resolutions and num_classes"
        )
    return out


def unet_state_dict_to_diffusers(state_dict: Mapping[str, Tensor], cfg: UNetConfig) -> dict[str, Tensor]:
    """difflab's UNet state dict in diffusers' UNet2DModel names (q, k, v split again); every tensor is used exactly once."""
    _check_layout(cfg)
    left = dict(state_dict)
    out: dict[str, Tensor] = {}

    def take(key: str) -> Tensor:
        if key not in left:
            raise UserError(f"difflab state dict has no '{key}'; it does not match its own UNetConfig")
        return left.pop(key)

    for theirs, ours, part, heads in _pairs(cfg):
        if part == "copy":
            for suffix in ("weight", "bias"):
                if f"{ours}.{suffix}" in left:
                    out[f"{theirs}.{suffix}"] = take(f"{ours}.{suffix}")
            continue
        for suffix in ("weight", "bias"):
            qkv = take(f"{ours}.qkv.{suffix}")
            q, k, v = _split_qkv(qkv[..., 0] if suffix == "weight" else qkv, heads, cfg.use_new_attention_order)
            out.update({f"{theirs}.to_q.{suffix}": q, f"{theirs}.to_k.{suffix}": k, f"{theirs}.to_v.{suffix}": v})
            proj = take(f"{ours}.proj_out.{suffix}")
            out[f"{theirs}.to_out.0.{suffix}"] = proj[..., 0] if suffix == "weight" else proj
    if left:
        raise UserError(f"{len(left)} tensors of the UNet have no diffusers place (first: '{sorted(left)[0]}')")
    # safetensors refuses views that share memory: every exported tensor owns its storage.
    return {k: v.contiguous().clone() for k, v in out.items()}
