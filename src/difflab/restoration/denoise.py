"""Denoising an image with a KNOWN noise level by starting the reverse process part-way (seed 002's "расшумление").

An observation y = x_0 + sigma_n n, n ~ N(0, I), is, after scaling by a_t, exactly a draw of the forward process
q(x_t | x_0) = N(a_t x_0, a_t^2 sigma_t^2 I) at the step whose noise-to-signal ratio sigma_t equals sigma_n (the
process form x_t = a_t (x_0 + sigma_t eps) of docs/architecture.md). The grid of sigma_t is discrete, so we take the
first step t with sigma_t >= sigma_n and add the missing noise, sqrt(sigma_t^2 - sigma_n^2) xi: then

    x_t = a_t (y + sqrt(sigma_t^2 - sigma_n^2) xi)  ~  q(x_t | x_0)  exactly,

and any sampler run from t to clean data draws from the model's p(x_0 | x_t), a posterior sample given y
(method "sample"). Method "mean" returns the denoiser's x0 prediction at (x_t, t) instead, Tweedie's posterior mean
E[x_0 | x_t]: one network evaluation, the minimum-MSE estimate (blurrier than a sample).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from difflab.denoiser import Denoiser
from difflab.errors import UserError
from difflab.process import NoiseProcess
from difflab.samplers import ddpm
from difflab.restoration.schedule import steps_from

DenoiseMethod = Literal["sample", "mean"]
DENOISE_METHODS: tuple[str, ...] = ("sample", "mean")


def check_noise_sigma(sigma_n: float) -> None:
    """The noise std must be a positive finite number (on the [-1, 1] pixel scale)."""
    if not (isinstance(sigma_n, (int, float)) and math.isfinite(sigma_n) and sigma_n > 0):
        raise UserError(f"--noise-sigma must be a positive number (the noise std on the [-1, 1] pixel scale); got {sigma_n}")


def matching_step(process: NoiseProcess, sigma_n: float) -> int:
    """The first timestep t with sigma_t >= sigma_n (sigma_t: the process's noise-to-signal ratio)."""
    check_noise_sigma(sigma_n)
    sig = process.sigma(torch.arange(process.T))
    above = torch.nonzero(sig >= sigma_n * (1 - 1e-9))
    if above.numel() == 0:
        raise UserError(f"--noise-sigma {sigma_n:g} is above the process's largest noise level sigma_{process.T - 1} = {float(sig[-1]):.4g}: "
                        "such an image carries no usable signal for this model")
    return int(above[0, 0])


def noisy_to_xt(process: NoiseProcess, y_noisy: Tensor, sigma_n: float, t: int, generator: torch.Generator | None = None) -> Tensor:
    """x_t = a_t (y + sqrt(sigma_t^2 - sigma_n^2) xi): the observation as an exact draw of q(x_t | x_0)."""
    sigma_t = float(process.sigma(torch.tensor([t]))[0])
    a_t = float(process.a(torch.tensor([t]))[0])
    extra = math.sqrt(max(sigma_t**2 - sigma_n**2, 0.0))
    xi = torch.randn(y_noisy.shape, generator=generator, dtype=y_noisy.dtype).to(y_noisy.device)
    return a_t * (y_noisy + extra * xi)


@torch.no_grad()
def denoise(
    denoiser: Denoiser,
    y_noisy: Tensor,
    sigma_n: float,
    *,
    sampler: Callable | None = None,
    n_steps: int = 50,
    method: DenoiseMethod = "sample",
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    options: dict | None = None,
) -> Tensor:
    """Clean estimate of y_noisy = x_0 + sigma_n n. `sampler`: a registered sampler's function (default ancestral DDPM),
    run over `n_steps` steps from the matching t down to clean data (method "sample"); method "mean": E[x_0 | x_t]."""
    if method not in DENOISE_METHODS:
        raise UserError(f"unknown denoising method {method!r}; valid: {', '.join(DENOISE_METHODS)}")
    p = denoiser.process
    t = matching_step(p, sigma_n)
    x_t = noisy_to_xt(p, y_noisy, sigma_n, t, generator)
    if method == "mean":
        return denoiser(x_t, torch.full((x_t.shape[0],), t), y).x0
    sampler = ddpm if sampler is None else sampler
    return sampler(denoiser, x_t, steps_from(t, n_steps), y=y, generator=generator, **(options or {}))
