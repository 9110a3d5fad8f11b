"""Sinusoidal timestep features (Vaswani et al. 2017, as used by Ho et al. 2020 Sec. 4 and ADM)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def timestep_embedding(
    t: Tensor, dim: int, *, flip_sin_to_cos: bool = True, freq_shift: int = 0, max_period: float = 10000.0
) -> Tensor:
    """Features [cos(t w_k), sin(t w_k)] (or [sin, cos]) with w_k = max_period^(-k / (dim/2 - freq_shift)); t (B,) -> (B, dim).

    ADM uses flip_sin_to_cos=True, freq_shift=0; DDPM (and diffusers' port) uses False, 1.
    Computed in float32 like both references, so continuous t is fine; the caller casts.
    """
    half = dim // 2
    # Same float32 operation order as guided-diffusion and diffusers, so features match them bit for bit.
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device)
    w = torch.exp(exponent / (half - freq_shift))  # (half,)
    args = t.to(torch.float32)[:, None] * w[None]  # (B, half)
    parts = (torch.cos(args), torch.sin(args)) if flip_sin_to_cos else (torch.sin(args), torch.cos(args))
    emb = torch.cat(parts, dim=-1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def sincos_2d_position_embedding(dim: int, grid: int, *, max_period: float = 10000.0) -> Tensor:
    """DiT's fixed position embedding of a grid x grid token map (Peebles & Xie 2023, Sec. 3.2; MAE's pos_embed) -> (grid^2, dim).

    Token n = row * grid + col (the raster order of patchify). Channels [0, dim/2) encode the column, [dim/2, dim) the
    row, each as [sin(pos w_k), cos(pos w_k)] with w_k = max_period^(-k / (dim/4)): sin first, the reverse of the
    timestep features' [cos, sin]. Computed in float64 like the reference (numpy), then cast, so released weights
    see exactly the table they were trained with.
    """
    if dim % 4:
        raise ValueError(f"the 2-D sin-cos position embedding needs dim divisible by 4; got {dim}")
    quarter = dim // 4
    w = 1.0 / max_period ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (dim/4,)
    pos = torch.arange(grid, dtype=torch.float64)
    col, row = pos.repeat(grid), pos.repeat_interleave(grid)  # (grid^2,) each, raster order

    def axis(p: Tensor) -> Tensor:
        args = p[:, None] * w[None]  # (grid^2, dim/4)
        return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)  # (grid^2, dim/2)

    return torch.cat([axis(col), axis(row)], dim=-1).float()


def labels_or_null(y: Tensor | None, num_classes: int | None, has_null: bool, batch: int, device: torch.device, net: str) -> Tensor | None:
    """The labels a network embeds: y; for y=None the null label num_classes (classifier-free guidance, Ho & Salimans
    2022) when the net has one; None for an unconditional net. `net` names it in the errors."""
    if num_classes is None:
        if y is not None:
            raise ValueError(f"this {net} is unconditional (num_classes is null) but labels y were given")
        return None
    if y is None:
        if not has_null:
            raise ValueError(f"this {net} is class-conditional: pass labels y, or build it with class_dropout_null")
        y = torch.full((batch,), num_classes, dtype=torch.long, device=device)
    return y
