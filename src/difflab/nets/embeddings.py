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
