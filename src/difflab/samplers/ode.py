"""Euler and Heun on the probability-flow ODE dx_hat/dsigma = (x_hat - D(x_hat; sigma)) / sigma (Karras et al. 2022).

Both take EDM's optional stochastic churn (Algorithm 2): before a step at sigma_i in [S_tmin, S_tmax], noise
raises the level to sigma_hat = sigma_i (1 + gamma), gamma = min(S_churn / N, sqrt(2) - 1). On a discretely
trained denoiser sigma_hat is rounded to the nearest timestep above t, and exactly that level's noise is added.
With S_churn = 0 (default) both are deterministic; Euler is then DDIM with eta = 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from difflab.denoiser import Denoiser
from difflab.samplers.sigma import a_of, denoise_hat, nearest_timestep, next_steps, sigma_of


def _churn(denoiser: Denoiser, x_hat: Tensor, t: int, n: int, S_churn: float, S_tmin: float, S_tmax: float,
           S_noise: float, generator: torch.Generator | None) -> tuple[Tensor, int]:
    """EDM Algorithm 2, lines 4-6: x_hat at the raised level t_hat >= t (t_hat = t when gamma = 0)."""
    p = denoiser.process
    sigma = sigma_of(p, t)
    gamma = min(S_churn / n, math.sqrt(2) - 1) if S_tmin <= sigma <= S_tmax else 0.0
    if gamma <= 0:
        return x_hat, t
    t_hat = nearest_timestep(p, sigma * (1 + gamma), lo=t)
    sigma_hat = sigma_of(p, t_hat)
    z = torch.randn(x_hat.shape, generator=generator, dtype=x_hat.dtype).to(x_hat.device)
    return x_hat + math.sqrt(sigma_hat**2 - sigma**2) * S_noise * z, t_hat


@torch.no_grad()
def euler(
    denoiser: Denoiser,
    x_T: Tensor,
    steps: Sequence[int],
    *,
    S_churn: float = 0.0,
    S_tmin: float = 0.0,
    S_tmax: float = math.inf,
    S_noise: float = 1.0,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
) -> Tensor:
    """Euler steps x_hat_{i+1} = x_hat_i + (sigma_{i+1} - sigma_i) d_i, d_i = (x_hat_i - D_i) / sigma_i.

    EDM Algorithm 2 without the second-order correction (k-diffusion's `sample_euler`).
    """
    p = denoiser.process
    pairs = next_steps(steps)
    x_hat = x_T / a_of(p, pairs[0][0])
    for i, (t, s) in enumerate(pairs):
        x_hat, t_hat = _churn(denoiser, x_hat, t, len(pairs), S_churn, S_tmin, S_tmax, S_noise, generator)
        sigma_hat, sigma_next = sigma_of(p, t_hat), sigma_of(p, s)
        x0, _ = denoise_hat(denoiser, x_hat, t_hat, y)
        d = (x_hat - x0) / sigma_hat
        x_hat = x_hat + (sigma_next - sigma_hat) * d
        if callback is not None:
            callback({"i": i, "t": t, "s": s, "x": a_of(p, s) * x_hat, "x0": x0})
    return x_hat


@torch.no_grad()
def heun(
    denoiser: Denoiser,
    x_T: Tensor,
    steps: Sequence[int],
    *,
    S_churn: float = 0.0,
    S_tmin: float = 0.0,
    S_tmax: float = math.inf,
    S_noise: float = 1.0,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
) -> Tensor:
    """Heun's 2nd-order method (EDM Algorithm 1; Algorithm 2 with churn); the last step to sigma = 0 is Euler: 2N - 1 NFE."""
    p = denoiser.process
    pairs = next_steps(steps)
    x_hat = x_T / a_of(p, pairs[0][0])
    for i, (t, s) in enumerate(pairs):
        x_hat, t_hat = _churn(denoiser, x_hat, t, len(pairs), S_churn, S_tmin, S_tmax, S_noise, generator)
        sigma_hat, sigma_next = sigma_of(p, t_hat), sigma_of(p, s)
        x0, _ = denoise_hat(denoiser, x_hat, t_hat, y)
        d = (x_hat - x0) / sigma_hat
        x_next = x_hat + (sigma_next - sigma_hat) * d
        if sigma_next > 0:  # second-order correction (Alg. 1, lines 9-11)
            x0_next, _ = denoise_hat(denoiser, x_next, s, y)
            d_prime = (x_next - x0_next) / sigma_next
            x_next = x_hat + (sigma_next - sigma_hat) * (0.5 * d + 0.5 * d_prime)
        x_hat = x_next
        if callback is not None:
            callback({"i": i, "t": t, "s": s, "x": a_of(p, s) * x_hat, "x0": x0})
    return x_hat
