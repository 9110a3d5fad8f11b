"""The sigma view shared by the ODE solvers: x_hat = x_t / a_t = x_0 + sigma_t eps (Karras et al. 2022, Sec. 2).

In these coordinates the probability-flow ODE of both VP and VE processes is dx_hat/dsigma = eps(x_hat, sigma)
= (x_hat - D(x_hat; sigma)) / sigma, with D the denoiser's x_0. The fixed-step solvers visit only the integer
timesteps they are given (sigma_i = sigma(t_i), and sigma = 0 at the clean index -1), so they work on any
discretely trained Denoiser; only the adaptive solver needs noise levels between timesteps (`eps_at_sigma`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from difflab.denoiser import Denoiser
from difflab.process import NoiseProcess


def next_steps(steps) -> list[tuple[int, int]]:
    """Pairs (t, s) of each reverse step over the decreasing `steps`; the last one lands on s = -1 (clean data)."""
    steps = [int(t) for t in steps]
    return list(zip(steps, steps[1:] + [-1]))


def sigma_of(process: NoiseProcess, t: int) -> float:
    """sigma_t as a float (0 at the clean index -1)."""
    return float(process.sigma(torch.tensor([t]))[0])


def a_of(process: NoiseProcess, t: int) -> float:
    """a_t as a float (1 at the clean index -1)."""
    return float(process.a(torch.tensor([t]))[0])


def denoise_hat(denoiser: Denoiser, x_hat: Tensor, t: int, y: Tensor | None = None,
                s: int | None = None) -> tuple[Tensor, Tensor]:
    """(D(x_hat; sigma_t), eps) at integer t: the denoiser sees x_t = a_t x_hat."""
    b = x_hat.shape[0]
    pred = denoiser(a_of(denoiser.process, t) * x_hat, torch.full((b,), t), y, s=None if s is None else torch.full((b,), s))
    return pred.x0, pred.eps


def sigma_table(process: NoiseProcess) -> Tensor:
    """sigma_t for t = 0..T-1 (float64, increasing)."""
    return process.sigma(torch.arange(process.T))


def nearest_timestep(process: NoiseProcess, sigma: float, lo: int = 0, hi: int | None = None) -> int:
    """The timestep in lo..hi whose sigma is nearest to `sigma` in log scale."""
    hi = process.T - 1 if hi is None else hi
    log_sig = sigma_table(process)[lo : hi + 1].log()
    return lo + int((log_sig - math.log(sigma)).abs().argmin())


def eps_at_sigma(denoiser: Denoiser, x_hat: Tensor, sigma: float, y: Tensor | None = None) -> tuple[Tensor, int]:
    """(eps, network evaluations used) at a continuous noise level sigma in [sigma_0, sigma_{T-1}].

    Exact for denoisers that define `at_sigma(x_hat, sigma, y)` (the Gaussian-mixture oracle). Otherwise linear
    interpolation in log sigma between the two bracketing timesteps (2 evaluations; 1 on a grid point): a
    continuous extension of a discretely trained network, exact on the grid.
    """
    if hasattr(denoiser, "at_sigma"):
        return denoiser.at_sigma(x_hat, sigma, y)[1], 1
    table = sigma_table(denoiser.process)
    i1 = int(torch.searchsorted(table, torch.tensor(sigma, dtype=torch.float64)).clamp(0, len(table) - 1))
    if i1 == 0 or math.isclose(float(table[i1]), sigma, rel_tol=1e-12):
        return denoise_hat(denoiser, x_hat, i1, y)[1], 1
    i0 = i1 - 1
    w = (math.log(sigma) - math.log(float(table[i0]))) / (math.log(float(table[i1])) - math.log(float(table[i0])))
    return (1 - w) * denoise_hat(denoiser, x_hat, i0, y)[1] + w * denoise_hat(denoiser, x_hat, i1, y)[1], 2


def prior_sample(process: NoiseProcess, shape, generator: torch.Generator | None = None, dtype=torch.float64) -> Tensor:
    """x_T ~ N(0, a_T^2 (1 + sigma_T^2) I), the noisiest marginal of unit-variance data.

    N(0, I) for VP; about N(0, sigma_max^2 I) for VE.
    """
    t = process.T - 1
    scale = a_of(process, t) * math.sqrt(1 + sigma_of(process, t) ** 2)
    return scale * torch.randn(*shape, generator=generator, dtype=dtype)
