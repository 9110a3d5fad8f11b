"""SDEdit (Meng et al. 2022): image-to-image editing by noising an input part-way and denoising it with the model.

The input x (a sketch, a photo, a digit of another style) is sent to step t = ceil(strength * T) - 1 with the forward
process, x_t ~ q(x_t | x) = N(a_t x, std_t^2 I) (SDEdit Algorithm 1 with the VP/VE process of this library), and any
sampler brings it back to clean data. The strength trades faithfulness for realism: 0 returns the input unchanged (no
noise, no step), 1 starts from the noisiest step T - 1, where almost nothing of the input survives (a_{T-1} ~ 0.006
for DDPM's linear schedule): the result is a plain sample from the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from difflab.denoiser import Denoiser
from difflab.errors import UserError
from difflab.samplers import ddim
from difflab.restoration.schedule import steps_from


def check_strength(strength: float) -> None:
    """The SDEdit strength must lie in [0, 1]."""
    if not (isinstance(strength, (int, float)) and math.isfinite(strength) and 0.0 <= strength <= 1.0):
        raise UserError(f"--strength must be in [0, 1] (0 keeps the input, 1 ignores it); got {strength}")


def strength_step(T: int, strength: float) -> int:
    """t = ceil(strength * T) - 1 in -1..T-1; -1 (clean data, nothing to do) for strength 0."""
    check_strength(strength)
    return min(T, math.ceil(strength * T - 1e-9)) - 1


@torch.no_grad()
def sdedit(
    denoiser: Denoiser,
    x_input: Tensor,
    strength: float,
    *,
    sampler: Callable | None = None,
    n_steps: int = 50,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    options: dict | None = None,
) -> Tensor:
    """SDEdit of x_input (B, ...): noise to t = strength_step(T, strength) with q(x_t | x_0), then `sampler` (a registered
    sampler's function; default DDIM, eta = 0) over `n_steps` steps from t down to clean data."""
    p = denoiser.process
    t = strength_step(p.T, strength)
    if t < 0:
        return x_input.clone()
    eps = torch.randn(x_input.shape, generator=generator, dtype=x_input.dtype).to(x_input.device)
    x_t = p.q_sample(x_input, torch.full((x_input.shape[0],), t), eps)
    sampler = ddim if sampler is None else sampler
    return sampler(denoiser, x_t, steps_from(t, n_steps), y=y, generator=generator, **(options or {}))
