"""The reverse chain of a restoration task that starts part-way: n timesteps from a starting step t down to 0."""

from __future__ import annotations

import numpy as np

from difflab.errors import UserError


def steps_from(t: int, n: int) -> list[int]:
    """Up to n distinct timesteps, evenly spaced from t (first) down to 0 (fewer when t + 1 < n), decreasing.

    Used by denoising (t = the step whose noise matches the image's) and SDEdit (t = strength * T): a sampler run on
    these steps starts from x_t and ends on clean data, whatever sampler it is.
    """
    if t < 0:
        raise UserError(f"a reverse chain must start at a timestep >= 0; got {t}")
    if n < 1:
        raise UserError(f"--steps must be at least 1; got {n}")
    ts = sorted({int(v) for v in np.round(np.linspace(0, t, min(n, t + 1)))}, reverse=True)
    return ts
