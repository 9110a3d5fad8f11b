"""DDIM (Song, Meng & Ermon 2021): the non-Markovian step with noise sigma_{t->s} that covers DDPM (eta=1) and DDIM (eta=0)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from difflab.denoiser import Denoiser, bcast
from difflab.process import NoiseProcess


def ddim_step(process: NoiseProcess, x0: Tensor, eps: Tensor, t: Tensor, s: Tensor, eta: float, z: Tensor | None) -> Tensor:
    """x_s = a_s x0 + sqrt(std_s^2 - sigma_ts^2) eps + sigma_ts z (DDIM Eq. 12).

    sigma_ts^2 = eta^2 * beta_tilde_{t->s} = eta^2 (1 - alpha_bar_s)/(1 - alpha_bar_t) (1 - alpha_bar_t/alpha_bar_s)
    (DDIM Eq. 16): eta = 1 is the DDPM posterior variance, eta = 0 the deterministic DDIM.
    """
    var_ts = eta**2 * process.posterior_var(t, s)
    dir_coef = (process.std(s) ** 2 - var_ts).clamp(min=0).sqrt()
    x = bcast(process.a(s), x0) * x0 + bcast(dir_coef, eps) * eps
    if eta > 0 and z is not None:
        x = x + bcast(var_ts.sqrt(), z) * z
    return x


@torch.no_grad()
def ddim(
    denoiser: Denoiser,
    x_T: Tensor,
    steps: Sequence[int],
    *,
    eta: float = 0.0,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
) -> Tensor:
    """DDIM sampling over the decreasing `steps`; eta = 0 is deterministic (DDIM Sec. 4.1)."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0; got {eta}")
    x = x_T
    steps = list(steps)
    b = x.shape[0]
    for i, t in enumerate(steps):
        s = steps[i + 1] if i + 1 < len(steps) else -1
        tt, ss = torch.full((b,), t), torch.full((b,), s)
        pred = denoiser(x, tt, y, s=ss)
        z = None
        if eta > 0 and s >= 0:
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        x = ddim_step(denoiser.process, pred.x0, pred.eps, tt, ss, eta, z)
        if callback is not None:
            callback({"i": i, "t": t, "s": s, "x": x, "x0": pred.x0})
    return x
