"""Multistep consistency sampling (Song et al. 2023, Algorithm 1), written as gamma-sampling over any Denoiser.

A consistency model maps x_t straight to x_0 = f(x_t, t) (its Prediction.x0). Algorithm 1 alternates that jump with
re-noising to the next, lower noise level: x_s = a_s (x_0 + sigma_s z). gamma-sampling (Kim et al. 2024, CTM) keeps a
share of the direction the model implies, x_s = a_s (x_0 + sigma_s (sqrt(1 - gamma^2) eps + gamma z)): gamma = 1 is
Algorithm 1, gamma = 0 the deterministic DDIM step. The default gamma = 0 is the one that is a correct sampler for every
Denoiser (on a plain diffusion model fresh noise with the posterior mean E[x_0 | x_t] shrinks the spread); a consistency
student's run config sets gamma = 1, the paper's sampler.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from difflab.denoiser import Denoiser, bcast


@torch.no_grad()
def consistency(
    denoiser: Denoiser,
    x_T: Tensor,
    steps: Sequence[int],
    *,
    gamma: float = 0.0,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
) -> Tensor:
    """x_0 = f(x_T, T); then per step re-noise to s and jump again (Song et al. 2023, Algorithm 1 at gamma = 1)."""
    if not 0 <= gamma <= 1:
        raise ValueError(f"gamma must be in [0, 1]; got {gamma}")
    p, x, steps, b = denoiser.process, x_T, list(steps), x_T.shape[0]
    for i, t in enumerate(steps):
        s = steps[i + 1] if i + 1 < len(steps) else -1
        tt, ss = torch.full((b,), t), torch.full((b,), s)
        pred = denoiser(x, tt, y, s=ss)
        if s < 0:
            x = pred.x0  # the last jump lands on the data: f(x_t, t)
        else:
            direction = pred.eps if gamma == 0 else math.sqrt(1 - gamma**2) * pred.eps
            if gamma > 0:
                direction = direction + gamma * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            x = bcast(p.a(ss), x) * (pred.x0 + bcast(p.sigma(ss), x) * direction)  # x_s = a_s (x_0 + sigma_s n)
        if callback is not None:
            callback({"i": i, "t": t, "s": s, "x": x, "x0": pred.x0})
    return x
