"""Adaptive Dormand-Prince RK5(4) (Dormand & Prince 1980), and the probability-flow ODE sampler built on it.

`solve_ivp_rk45` is generic (any f(t, x) -> dx/dt on a tensor state, t0 > t1 allowed) so that likelihood
evaluation can reuse it with its own drift. The sampler integrates dx_hat/du = x_hat - D(x_hat; sigma) in
u = log sigma (smooth over four decades of sigma, as score_sde's RK45 integrates in t), from sigma of the first
step to sigma of the last, then takes the final step to sigma = 0 as x_hat = D.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from difflab.denoiser import Denoiser
from difflab.samplers.sigma import a_of, denoise_hat, eps_at_sigma, sigma_of

# Butcher tableau of Dormand-Prince 5(4) (Hairer, Norsett & Wanner, Table 5.2); B5 is the 5th-order solution,
# E = B5 - B4 the embedded error estimate. FSAL: the last stage is f at the accepted point.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)


def _err_norm(err: Tensor, x: Tensor, x_new: Tensor, rtol: float, atol: float) -> float:
    """RMS of err / (atol + rtol max(|x|, |x_new|)), as scipy's RK45."""
    scale = atol + rtol * torch.maximum(x.abs(), x_new.abs())
    return float((err / scale).pow(2).mean().sqrt())


def solve_ivp_rk45(
    f: Callable[[float, Tensor], Tensor],
    x: Tensor,
    t0: float,
    t1: float,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    h0: float | None = None,
    max_steps: int = 100_000,
    callback: Callable[[float, Tensor], None] | None = None,
) -> tuple[Tensor, int]:
    """Integrate dx/dt = f(t, x) from t0 to t1 with error control; returns (x(t1), number of f evaluations).

    Step control: h_new = h min(10, max(0.2, 0.9 err^(-1/5))) (Hairer et al. II.4); the initial step is Hairer's
    estimate from f at t0 unless h0 is given. One step size for the whole (batched) state.
    """
    direction = 1.0 if t1 >= t0 else -1.0
    t, nfe = t0, 1
    k1 = f(t, x)
    if h0 is None:  # Hairer, Norsett & Wanner, II.4 (a): h = 0.01 ||x|| / ||f||, one Euler probe refines it
        scale = atol + rtol * x.abs()
        d0, d1 = float((x / scale).pow(2).mean().sqrt()), float((k1 / scale).pow(2).mean().sqrt())
        h = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        h = min(h, abs(t1 - t0))
        k_probe = f(t + direction * h, x + direction * h * k1)
        nfe += 1
        d2 = float(((k_probe - k1) / scale).pow(2).mean().sqrt()) / h
        h1 = max(1e-6, h * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1 / 5)
        h = min(100 * h, h1, abs(t1 - t0))
    else:
        h = abs(h0)
    for _ in range(max_steps):
        if direction * (t1 - t) <= 0:
            return x, nfe
        h = min(h, abs(t1 - t))
        ks = [k1]
        for c, a in zip(_C[1:], _A[1:]):
            xi = x + direction * h * sum(aj * kj for aj, kj in zip(a, ks) if aj != 0.0)
            ks.append(f(t + direction * h * c, xi))
        nfe += 6
        x_new = x + direction * h * sum(b * k for b, k in zip(_B5, ks) if b != 0.0)
        # The 7th stage was evaluated at x_new itself (a_7 = b_5), so ks[-1] = f(t + h, x_new): FSAL.
        err = direction * h * sum(e * k for e, k in zip(_E, ks) if e != 0.0)
        err_norm = _err_norm(err, x, x_new, rtol, atol)
        if err_norm <= 1.0:
            t, x, k1 = t + direction * h, x_new, ks[-1]
            if callback is not None:
                callback(t, x)
        h = h * min(10.0, max(0.2, 0.9 * (err_norm + 1e-16) ** -0.2))
    raise RuntimeError(f"RK45 did not reach t1 = {t1} in {max_steps} steps (at t = {t}); loosen rtol/atol")


@torch.no_grad()
def ode_rk45(
    denoiser: Denoiser,
    x_T: Tensor,
    steps: Sequence[int],
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
) -> Tensor:
    """Probability-flow ODE with adaptive RK45 from sigma(steps[0]) to sigma(steps[-1]) (only these two are used), then x0.

    The drift dx_hat/du = sigma eps(x_hat, sigma), u = log sigma, needs eps between timesteps: see `eps_at_sigma`.
    NFE is adaptive; the final callback reports the network evaluations under "nfe".
    """
    p = denoiser.process
    t_first, t_last = int(steps[0]), int(steps[-1])
    x_hat = x_T / a_of(p, t_first)
    u0, u1 = math.log(sigma_of(p, t_first)), math.log(sigma_of(p, t_last))
    calls = [0]  # network evaluations (two per drift evaluation when eps is interpolated between timesteps)

    def drift(u: float, xh: Tensor) -> Tensor:
        eps, n = eps_at_sigma(denoiser, xh, math.exp(u), y)
        calls[0] += n
        return math.exp(u) * eps

    if u1 < u0:
        x_hat, _ = solve_ivp_rk45(drift, x_hat, u0, u1, rtol=rtol, atol=atol)
    x0, _ = denoise_hat(denoiser, x_hat, t_last, y)
    if callback is not None:
        callback({"i": 0, "t": t_first, "s": -1, "x": x0, "x0": x0, "nfe": calls[0] + 1})
    return x0
