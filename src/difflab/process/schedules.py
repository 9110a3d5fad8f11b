"""Variance schedules in float64: beta_t for the VP (DDPM) process, sigma_i for the VE (NCSN) process."""

from __future__ import annotations

import math

import torch


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Linear beta_1..beta_T from 1e-4 to 0.02 at T=1000 (Ho et al. 2020, Sec. 4); rescaled by 1000/T for other T.

    The rescaling (improved DDPM, `get_named_beta_schedule`) keeps the total noise comparable when T
    changes; at T=1000 it is the identity.
    """
    scale = 1000.0 / T
    return torch.linspace(scale * beta_start, scale * beta_end, T, dtype=torch.float64).clamp(max=0.999)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule: alpha_bar(t) = f(t)/f(0), f(t) = cos((t/T + s)/(1 + s) * pi/2)^2 (Nichol & Dhariwal 2021, Eq. 17).

    beta_t = 1 - alpha_bar(t)/alpha_bar(t-1), clipped at `max_beta` to avoid the singularity at t = T.
    """
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


def geometric_sigmas(L: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """NCSN noise levels sigma_1 < ... < sigma_L, a geometric sequence (Song & Ermon 2019, Sec. 4.2), index 0 smallest."""
    return torch.exp(torch.linspace(math.log(sigma_min), math.log(sigma_max), L, dtype=torch.float64))
