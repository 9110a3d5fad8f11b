"""DPM-Solver++ (Lu et al. 2022): exponential integrators of the probability-flow ODE in data prediction.

With lambda = -log sigma (the half log-SNR) and h = lambda_s - lambda_t, the exact solution is
x_hat_s = (sigma_s / sigma_t) x_hat_t + integral of e^{-(lambda_s - lambda)} D(lambda) dlambda; the solvers expand
D in lambda: 2M and 3M from previous evaluations (multistep), 2S from a midpoint evaluation (singlestep).
Every step to sigma = 0 (the clean index -1) is first order: x_hat = D. Coordinates: x_hat = x_t / a_t.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from difflab.denoiser import Denoiser
from difflab.samplers.sigma import a_of, denoise_hat, nearest_timestep, next_steps, sigma_of


@torch.no_grad()
def dpmpp_2m(
    denoiser: Denoiser,
    x_T: Tensor,
    steps: Sequence[int],
    *,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
) -> Tensor:
    """DPM-Solver++(2M), Lu et al. 2022 Algorithm 2: D_i = (1 + 1/2r) x0_i - (1/2r) x0_{i-1}, r = h_{i-1} / h_i."""
    p = denoiser.process
    pairs = next_steps(steps)
    x_hat = x_T / a_of(p, pairs[0][0])
    x0_prev, h_prev = None, None
    for i, (t, s) in enumerate(pairs):
        sigma_t, sigma_s = sigma_of(p, t), sigma_of(p, s)
        x0, _ = denoise_hat(denoiser, x_hat, t, y)
        if sigma_s == 0:
            x_hat, h = x0, None
        else:
            h = math.log(sigma_t / sigma_s)
            if x0_prev is None:
                D = x0  # first step: DPM-Solver++(1) = DDIM
            else:
                r = h_prev / h
                D = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
            x_hat = (sigma_s / sigma_t) * x_hat - math.expm1(-h) * D
        x0_prev, h_prev = x0, h
        if callback is not None:
            callback({"i": i, "t": t, "s": s, "x": a_of(p, s) * x_hat, "x0": x0})
    return x_hat


@torch.no_grad()
def dpmpp_3m(
    denoiser: Denoiser,
    x_T: Tensor,
    steps: Sequence[int],
    *,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
) -> Tensor:
    """DPM-Solver++(3M), Lu et al. 2022: third-order multistep from divided differences of x0 in lambda.

    With D1 ~ h D' and D2 = (D1_0 - D1_1) / (r0 + r1) ~ h^2 D'' / 2, the exact integral of the quadratic
    Taylor term of D is phi_2 D1 - 2 phi_3 D2, phi_2 = (e^{-h} - 1)/h + 1, phi_3 = phi_2 / h - 1/2.
    The reference code (dpm-solver, diffusers, k-diffusion) uses -phi_3 D2: half that term, which makes it
    second order; tests/test_samplers_conformance.py measures order 3 for this version.
    """
    p = denoiser.process
    pairs = next_steps(steps)
    x_hat = x_T / a_of(p, pairs[0][0])
    hist: list[tuple[Tensor, float]] = []  # (x0, h of the step that followed it), most recent last
    for i, (t, s) in enumerate(pairs):
        sigma_t, sigma_s = sigma_of(p, t), sigma_of(p, s)
        x0, _ = denoise_hat(denoiser, x_hat, t, y)
        if sigma_s == 0:
            x_hat = x0
        else:
            h = math.log(sigma_t / sigma_s)
            phi_1 = -math.expm1(-h)
            phi_2 = math.expm1(-h) / h + 1
            phi_3 = phi_2 / h - 0.5
            x_hat = (sigma_s / sigma_t) * x_hat + phi_1 * x0
            if len(hist) >= 2:
                (x0_2, h_2), (x0_1, h_1) = hist[-2], hist[-1]
                r0, r1 = h_1 / h, h_2 / h
                d1_0, d1_1 = (x0 - x0_1) / r0, (x0_1 - x0_2) / r1
                D1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                D2 = (d1_0 - d1_1) / (r0 + r1)
                x_hat = x_hat + phi_2 * D1 - 2 * phi_3 * D2
            elif len(hist) == 1:
                x0_1, h_1 = hist[-1]
                x_hat = x_hat + phi_2 * (x0 - x0_1) / (h_1 / h)
            hist.append((x0, h))
        if callback is not None:
            callback({"i": i, "t": t, "s": s, "x": a_of(p, s) * x_hat, "x0": x0})
    return x_hat


@torch.no_grad()
def dpmpp_2s(
    denoiser: Denoiser,
    x_T: Tensor,
    steps: Sequence[int],
    *,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
) -> Tensor:
    """DPM-Solver++(2S), Lu et al. 2022 Algorithm 1, with the intermediate point at the timestep u nearest the
    lambda-midpoint (r = (lambda_u - lambda_t) / h, exact for any r); a step with no timestep in between is first order.

    x_hat_u = (sigma_u/sigma_t) x_hat - (e^{-rh} - 1) x0_t;  D = (1 - 1/2r) x0_t + (1/2r) D(x_hat_u);
    x_hat_s = (sigma_s/sigma_t) x_hat - (e^{-h} - 1) D.
    """
    p = denoiser.process
    pairs = next_steps(steps)
    x_hat = x_T / a_of(p, pairs[0][0])
    for i, (t, s) in enumerate(pairs):
        sigma_t, sigma_s = sigma_of(p, t), sigma_of(p, s)
        x0, _ = denoise_hat(denoiser, x_hat, t, y)
        if sigma_s == 0 or t - s < 2:
            D = x0
        else:
            u = nearest_timestep(p, math.sqrt(sigma_t * sigma_s), lo=s + 1, hi=t - 1)
            h = math.log(sigma_t / sigma_s)
            r = math.log(sigma_t / sigma_of(p, u)) / h
            x_u = (sigma_of(p, u) / sigma_t) * x_hat - math.expm1(-r * h) * x0
            x0_u, _ = denoise_hat(denoiser, x_u, u, y)
            D = (1 - 1 / (2 * r)) * x0 + (1 / (2 * r)) * x0_u
        x_hat = (sigma_s / sigma_t) * x_hat - math.expm1(-math.log(sigma_t / sigma_s)) * D if sigma_s > 0 else D
        if callback is not None:
            callback({"i": i, "t": t, "s": s, "x": a_of(p, s) * x_hat, "x0": x0})
    return x_hat
