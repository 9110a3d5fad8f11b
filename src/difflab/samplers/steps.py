"""Choosing which timesteps a sampler visits: a decreasing list of integer indices into the process."""

from __future__ import annotations

from typing import Literal

import numpy as np

Spacing = Literal["leading", "trailing", "linspace", "quadratic"]
SPACINGS: tuple[str, ...] = ("leading", "trailing", "linspace", "quadratic")


def timesteps(T: int, n: int, spacing: Spacing = "leading") -> list[int]:
    """n distinct timesteps in 0..T-1, returned high to low (the order a sampler visits them).

    leading: 0, k, 2k, ... (DDIM's uniform skip, k = T // n); trailing: T-1, T-1-k, ... (ends at the
    noisiest step; Lin et al. 2024); linspace: evenly spaced over [0, T-1] incl. both ends (improved
    DDPM's respacing); quadratic: t_i = (i / n)^2 T-ish, denser at low noise (DDIM Sec. D.2).
    """
    if not 1 <= n <= T:
        raise ValueError(f"number of steps must be in 1..{T}; got {n}")
    if spacing == "leading":
        k = T // n
        ts = np.arange(n) * k
    elif spacing == "trailing":
        k = T / n
        ts = np.round(T - 1 - np.arange(n) * k).astype(int)[::-1]
    elif spacing == "linspace":
        ts = np.round(np.linspace(0, T - 1, n)).astype(int)
    elif spacing == "quadratic":
        ts = np.round(np.linspace(0, np.sqrt(T * 0.8), n) ** 2).astype(int)
    else:
        raise ValueError(f"unknown spacing {spacing!r}; valid: {', '.join(SPACINGS)}")
    ts = sorted(set(int(t) for t in ts))
    if len(ts) != n:  # rounding collided: fall back to distinct evenly spaced steps
        ts = sorted(set(int(t) for t in np.linspace(0, T - 1, n).round()))
    return ts[::-1]
