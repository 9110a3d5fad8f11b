"""Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1): the score view of a noise-conditioned denoiser.

The levels sigma_1 > ... > sigma_L are the sigma_t of the visited `steps`. NCSN's x = x_0 + sigma z is the
x_hat = x_t / a_t of any process, whose score is grad log p(x_hat) = -eps / sigma_t; so the same loop serves the
VE process (a_t = 1, x_hat = x) and the VP process (score of x_t = -eps / sqrt(1 - alpha_bar_t), times a_t).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from difflab.denoiser import Denoiser
from difflab.samplers.sigma import a_of, denoise_hat, sigma_of


@torch.no_grad()
def langevin(
    denoiser: Denoiser,
    x_T: Tensor,
    steps: Sequence[int],
    *,
    epsilon: float = 2e-4,
    n_steps_each: int = 50,
    denoise: bool = True,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
) -> Tensor:
    """For each level i: alpha_i = epsilon sigma_i^2 / sigma_L^2, then n_steps_each times
    x_hat <- x_hat + alpha_i/2 * score + sqrt(alpha_i) z (Algorithm 1). With `denoise`, return E[x_0 | x_hat] at
    sigma_L (one more evaluation; Jolicoeur-Martineau et al. 2021), else the last x_hat (noise level sigma_L).
    The defaults (epsilon 2e-4, 50 steps per level) are the ones checked on the oracle; Song & Ermon used 2e-5 and 100.
    """
    if not epsilon > 0 or n_steps_each < 1:
        raise ValueError(f"need epsilon > 0 and n_steps_each >= 1; got {epsilon}, {n_steps_each}")
    p = denoiser.process
    steps = [int(t) for t in steps]
    sigma_L = sigma_of(p, steps[-1])
    x_hat = x_T / a_of(p, steps[0])
    for i, t in enumerate(steps):
        sigma_i = sigma_of(p, t)
        alpha_i = epsilon * sigma_i**2 / sigma_L**2
        for _ in range(n_steps_each):
            _, eps = denoise_hat(denoiser, x_hat, t, y)
            score = -eps / sigma_i
            z = torch.randn(x_hat.shape, generator=generator, dtype=x_hat.dtype).to(x_hat.device)
            x_hat = x_hat + 0.5 * alpha_i * score + math.sqrt(alpha_i) * z
        if callback is not None:
            callback({"i": i, "t": t, "s": steps[i + 1] if i + 1 < len(steps) else -1, "x": a_of(p, t) * x_hat, "x0": None})
    if denoise:
        x_hat, _ = denoise_hat(denoiser, x_hat, steps[-1], y)
    return x_hat
