"""Spatial self-attention block of the DDPM/ADM U-Net (Ho et al. 2020 App. B; Dhariwal & Nichol 2021 Sec. 3).

Names mirror guided-diffusion's `AttentionBlock` (norm, qkv, attention, proj_out). Diffusers' single-
or multi-head `Attention` (to_q/to_k/to_v/to_out) is the same computation after a weight mapping
(see `convert.py`): its q, k, v split is the "new" attention order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from difflab.nets.blocks import GroupNorm32, zero_module


def _attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q^T k / sqrt(d)) applied to v; q, k, v (B, H, d, T) channel-major -> (B, H*d, T)."""
    b, n_heads, d, length = q.shape
    a = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))  # (B, H, T, d)
    return a.transpose(-1, -2).reshape(b, n_heads * d, length)


class QKVAttention(nn.Module):
    """Multi-head attention on a fused (B, 3*H*d, T) tensor laid out [q | k | v], each split into H heads ("new order")."""

    def __init__(self, n_heads: int):
        super().__init__()
        self.n_heads = n_heads

    def forward(self, qkv: Tensor) -> Tensor:
        b, width, length = qkv.shape
        d = width // (3 * self.n_heads)
        q, k, v = qkv.reshape(b, 3, self.n_heads, d, length).unbind(1)
        return _attend(q, k, v)


class QKVAttentionLegacy(nn.Module):
    """Multi-head attention on a fused (B, H*3*d, T) tensor laid out per head as [q_h | k_h | v_h] (legacy ADM order)."""

    def __init__(self, n_heads: int):
        super().__init__()
        self.n_heads = n_heads

    def forward(self, qkv: Tensor) -> Tensor:
        b, width, length = qkv.shape
        d = width // (3 * self.n_heads)
        q, k, v = qkv.reshape(b, self.n_heads, 3, d, length).unbind(2)
        return _attend(q, k, v)


class AttentionBlock(nn.Module):
    """x + proj_out(attention(qkv(norm(x)))) over the H*W positions; x (B, C, H, W) -> (B, C, H, W)."""

    def __init__(
        self,
        channels: int,
        num_heads: int,
        *,
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
        use_new_attention_order: bool = False,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.channels = channels
        self.num_heads = num_heads
        self.use_checkpoint = use_checkpoint
        self.norm = GroupNorm32(norm_groups, channels, eps=norm_eps)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)  # a 1x1 conv, kept as Conv1d for ADM state dicts
        self.attention = QKVAttention(num_heads) if use_new_attention_order else QKVAttentionLegacy(num_heads)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        b, c, height, width = x.shape
        x = x.reshape(b, c, height * width)  # (B, C, T)
        qkv = self.qkv(self.norm(x))  # (B, 3C, T)
        h = self.proj_out(self.attention(qkv))
        return (x + h).reshape(b, c, height, width)
