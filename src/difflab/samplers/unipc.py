"""UniPC (Zhao et al. 2023): a unified predictor-corrector multistep solver of the probability-flow ODE, data prediction.

With lambda = -log sigma, h = lambda_s - lambda_t, the predictor UniP-p extrapolates x0 from the p most recent
evaluations (Algorithm 2 / Eq. 8 of the paper), and the corrector UniC-p re-does the step once the model has been
evaluated at its end (Algorithm 1), which the next predictor needs anyway: one evaluation per step, and UniC raises
the order by one. B(h) = h ("bh1") or e^h - 1 ("bh2"). Coefficients follow the paper's Appendix / diffusers'
`multistep_uni_p_bh_update` and `multistep_uni_c_bh_update`, in x_hat = x_t / a_t coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

from difflab.denoiser import Denoiser
from difflab.samplers.sigma import a_of, denoise_hat, next_steps, sigma_of


def _rhs(rks: list[float], h: float, p: int, variant: str) -> tuple[Tensor, Tensor, float, float]:
    """R (p x p) with rows r_k^(i-1), b_i = phi_{i+1}(h) i! / B(h), plus h phi_1 = e^{-h} - 1 and B(h) (Eq. 8 / Thm 3.1)."""
    hh = -h  # data prediction integrates e^{-h}
    h_phi_1 = math.expm1(hh)
    B_h = hh if variant == "bh1" else math.expm1(hh)
    r = torch.tensor(rks + [1.0], dtype=torch.float64)
    R, b = [], []
    h_phi_k, factorial = h_phi_1 / hh - 1, 1
    for i in range(1, p + 1):
        R.append(r ** (i - 1))
        b.append(h_phi_k * factorial / B_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return torch.stack(R), torch.tensor(b, dtype=torch.float64), h_phi_1, B_h


def _update(x_hat: Tensor, sigma_ratio: float, hist: list[tuple[float, Tensor]], lam_s: float, p: int,
            variant: str, x0_new: Tensor | None) -> Tensor:
    """One UniP-p step from the newest history point to lambda_s, or UniC-p when x0_new (model at the step's end) is given.

    hist holds (lambda_k, x0_k), most recent last; D1_k = (x0_k - x0_0) / r_k with r_k = (lambda_k - lambda_0) / h.
    """
    lam_0, m0 = hist[-1]
    h = lam_s - lam_0
    rks = [(hist[-1 - k][0] - lam_0) / h for k in range(1, p)]
    D1s = [(hist[-1 - k][1] - m0) / rk for k, rk in zip(range(1, p), rks)]
    R, b, h_phi_1, B_h = _rhs(rks, h, p, variant)
    x = sigma_ratio * x_hat - h_phi_1 * m0
    if x0_new is None:  # predictor: p - 1 differences
        if not D1s:
            return x
        rhos = torch.tensor([0.5]) if p == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
        return x - B_h * sum(float(rho) * D for rho, D in zip(rhos, D1s))
    rhos = torch.tensor([0.5]) if p == 1 else torch.linalg.solve(R, b)
    res = sum((float(rho) * D for rho, D in zip(rhos[:-1], D1s)), torch.zeros_like(m0))
    return x - B_h * (res + float(rhos[-1]) * (x0_new - m0))


@torch.no_grad()
def unipc(
    denoiser: Denoiser,
    x_T: Tensor,
    steps: Sequence[int],
    *,
    order: int = 2,
    variant: Literal["bh1", "bh2"] = "bh2",
    corrector: bool = True,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
) -> Tensor:
    """UniPC-p (Zhao et al. 2023, Algorithm 3): UniC on the point just reached, then UniP to the next; the order
    warms up over the first steps and drops at the last ones (as diffusers' lower_order_final); the step to sigma = 0 is x0."""
    if order not in (1, 2, 3):
        raise ValueError(f"UniPC order must be 1, 2 or 3; got {order}")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"UniPC variant must be 'bh1' or 'bh2'; got {variant!r}")
    p_ = denoiser.process
    pairs = next_steps(steps)
    n = len(pairs)
    x_hat = x_T / a_of(p_, pairs[0][0])
    hist: list[tuple[float, Tensor]] = []
    last: tuple[Tensor, float, int] | None = None  # (x_hat before the last predictor, its sigma ratio, its order)
    for i, (t, s) in enumerate(pairs):
        sigma_t, sigma_s = sigma_of(p_, t), sigma_of(p_, s)
        x0, _ = denoise_hat(denoiser, x_hat, t, y)
        if corrector and last is not None:  # UniC: correct x_hat at t with the model's value there
            x_prev, ratio_prev, p_prev = last
            x_hat = _update(x_prev, ratio_prev, hist, -math.log(sigma_t), p_prev, variant, x0)
        hist = (hist + [(-math.log(sigma_t), x0)])[-order:]
        if sigma_s == 0:
            x_hat_next = x0
        else:
            p = min(order, len(hist), n - i)
            last = (x_hat, sigma_s / sigma_t, p)
            x_hat_next = _update(x_hat, sigma_s / sigma_t, hist, -math.log(sigma_s), p, variant, None)
        x_hat = x_hat_next
        if callback is not None:
            callback({"i": i, "t": t, "s": s, "x": a_of(p_, s) * x_hat, "x0": x0})
    return x_hat
