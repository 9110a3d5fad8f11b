"""Ancestral sampling of DDPM (Ho et al. 2020, Algorithm 2), on any decreasing subsequence of steps."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from difflab.denoiser import Denoiser


@torch.no_grad()
def ddpm(
    denoiser: Denoiser,
    x_T: Tensor,
    steps: Sequence[int],
    *,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
) -> Tensor:
    """x_s ~ N(mu_theta(x_t, t), Sigma_theta) for each step t -> s; no noise on the last step (Algorithm 2, line 4).

    On a subsequence the step t -> s uses the posterior q(x_s | x_t, x_0) of the skipped chain,
    which is improved DDPM's respacing. The variance (fixed small/large or learned) is the denoiser's.
    """
    x = x_T
    steps = list(steps)
    for i, t in enumerate(steps):
        s = steps[i + 1] if i + 1 < len(steps) else -1
        pred = denoiser(x, t, y, s=s)
        x = pred.mean
        if s >= 0:
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            x = x + (0.5 * pred.log_var).exp() * z
        if callback is not None:
            callback({"i": i, "t": t, "s": s, "x": x, "x0": pred.x0})
    return x
