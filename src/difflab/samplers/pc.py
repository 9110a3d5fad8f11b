"""Predictor-corrector sampling (Song et al. 2021, Algorithms 2-5): a reverse-SDE predictor, then Langevin correction.

Predictor for the step t -> s, with v = a_t^2 (sigma_t^2 - sigma_s^2) the variance of q(x_t | x_s):
- "reverse_diffusion": x_s = (2 - a_t / a_s) x_t + v score + sqrt(v) z. For VE this is Algorithm 2's
  x + (sigma_t^2 - sigma_s^2) s + sqrt(.) z; for VP, Algorithm 3's (2 - sqrt(1 - beta)) x + beta s + sqrt(beta) z.
- "ancestral": the DDPM step N(mu_theta, Sigma_theta) of the denoiser (Ho et al. Algorithm 2).
Corrector (Algorithms 4/5), n_corrector times at level s: eps_step = 2 alpha (snr ||z|| / ||score||)^2,
x <- x + eps_step score + sqrt(2 eps_step) z, with alpha = 1 - beta_s of the process (1 for VE). As the reference
code does, ||z|| and ||score|| are batch means of per-example norms, so the step size is common to the batch.
The last step lands on x_0 without noise and without correction (score_sde's `denoise=True`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

from difflab.denoiser import Denoiser
from difflab.samplers.sigma import a_of, next_steps, sigma_of


def _norm(v: Tensor) -> Tensor:
    """Batch mean of per-example L2 norms."""
    return v.reshape(v.shape[0], -1).norm(dim=1).mean()


@torch.no_grad()
def pc(
    denoiser: Denoiser,
    x_T: Tensor,
    steps: Sequence[int],
    *,
    predictor: Literal["reverse_diffusion", "ancestral"] = "reverse_diffusion",
    snr: float = 0.16,
    n_corrector: int = 1,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
) -> Tensor:
    """PC sampling over the decreasing `steps` (Song et al. 2021, Algorithm 2 for VE / 3 for VP)."""
    if predictor not in ("reverse_diffusion", "ancestral"):
        raise ValueError(f"predictor must be 'reverse_diffusion' or 'ancestral'; got {predictor!r}")
    p = denoiser.process
    b = x_T.shape[0]
    x = x_T

    def noise() -> Tensor:
        return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)

    for i, (t, s) in enumerate(next_steps(steps)):
        pred = denoiser(x, torch.full((b,), t), y, s=torch.full((b,), s))
        if predictor == "ancestral":
            x = pred.mean + (((0.5 * pred.log_var).exp() * noise()) if s >= 0 else 0)
        else:
            v = a_of(p, t) ** 2 * (sigma_of(p, t) ** 2 - sigma_of(p, s) ** 2)
            x = (2 - a_of(p, t) / a_of(p, s)) * x + v * pred.score + (math.sqrt(v) * noise() if s >= 0 else 0)
        if s >= 0:
            alpha = (a_of(p, s) / a_of(p, s - 1)) ** 2  # 1 - beta_s of the process; 1 for VE
            for _ in range(n_corrector):
                score = denoiser(x, torch.full((b,), s), y).score
                z = noise()
                step = 2 * alpha * (snr * _norm(z) / _norm(score)) ** 2
                x = x + step * score + (2 * step).sqrt() * z
        if callback is not None:
            callback({"i": i, "t": t, "s": s, "x": x, "x0": pred.x0})
    return x
