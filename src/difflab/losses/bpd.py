"""Bits per dimension: the full variational bound over all T steps for a dataset (improved DDPM's calc_bpd_loop)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from difflab.denoiser import Denoiser
from difflab.losses.gaussian import mean_flat
from difflab.losses.vlb import predict_step, prior_bpd, vlb_terms


class _Moments:
    """Running sum and sum of squares per column, float64, for means and standard errors."""

    def __init__(self, width: int):
        self.n = 0
        self.s1 = torch.zeros(width, dtype=torch.float64)
        self.s2 = torch.zeros(width, dtype=torch.float64)

    def add(self, values: Tensor) -> None:  # values: (B, width)
        v = values.detach().to(device="cpu", dtype=torch.float64)
        self.n += v.shape[0]
        self.s1 += v.sum(0)
        self.s2 += v.pow(2).sum(0)

    def mean(self) -> Tensor:
        return self.s1 / self.n

    def se(self) -> Tensor:
        if self.n < 2:
            return torch.full_like(self.s1, math.nan)
        var = (self.s2 - self.s1**2 / self.n).clamp(min=0) / (self.n - 1)
        return (var / self.n).sqrt()


@torch.no_grad()
def bits_per_dim(
    denoiser: Denoiser,
    x0: Tensor,
    y: Tensor | None = None,
    *,
    generator: torch.Generator | None,
    batch_size: int = 64,
    progress: bool = False,
) -> dict:
    """Monte-Carlo estimate of the bound sum_t L_t + L_T in bits/dim, one x_t ~ q(x_t|x_0) per example and t (Ho et al. Eq. 5).

    x0: (N, ...) data in [-1, 1]; y: (N,) labels or None. For each batch, noise eps is drawn from
    `generator` for t = T-1, ..., 0 in that order (on the CPU, moved to x0's device).
    Returns: total_bpd (float, mean over examples), total_bpd_se (its standard error), prior_bpd (float),
    per_example_bpd (N,), vb_per_t and vb_per_t_se ((T,), index t = L_t, for a plot), x0_mse_per_t and
    eps_mse_per_t ((T,)), x0_mse (float, the mean over t of x0_mse_per_t).
    """
    process = denoiser.process
    T, N = process.T, x0.shape[0]
    vb, x0_mse, eps_mse, prior = _Moments(T), _Moments(T), _Moments(T), _Moments(1)
    per_example = []
    starts = range(0, N, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="bits/dim", unit="batch")
    for start in starts:
        xb = x0[start : start + batch_size]
        yb = None if y is None else y[start : start + batch_size]
        B = xb.shape[0]
        terms = torch.zeros(B, T, dtype=torch.float64)
        mse_x0 = torch.zeros(B, T, dtype=torch.float64)
        mse_eps = torch.zeros(B, T, dtype=torch.float64)
        for t in range(T - 1, -1, -1):
            t_b = torch.full((B,), t, dtype=torch.long)
            eps = torch.randn(xb.shape, generator=generator, dtype=xb.dtype).to(xb.device)
            x_t = process.q_sample(xb, t_b, eps)
            pred = predict_step(denoiser, x_t, t_b, yb)
            terms[:, t] = vlb_terms(pred, xb, x_t, t_b, process=process).double().cpu()
            mse_x0[:, t] = mean_flat((pred.x0 - xb).double() ** 2).cpu()
            mse_eps[:, t] = mean_flat((pred.eps - eps).double() ** 2).cpu()
        prior_b = prior_bpd(process, xb).cpu()
        vb.add(terms)
        x0_mse.add(mse_x0)
        eps_mse.add(mse_eps)
        prior.add(prior_b[:, None])
        per_example.append(terms.sum(1) + prior_b)
    total = torch.cat(per_example)
    total_se = total.std(unbiased=True) / math.sqrt(N) if N > 1 else torch.tensor(math.nan)
    return {
        "total_bpd": float(total.mean()),
        "total_bpd_se": float(total_se),
        "prior_bpd": float(prior.mean()[0]),
        "per_example_bpd": total,
        "vb_per_t": vb.mean(),
        "vb_per_t_se": vb.se(),
        "x0_mse_per_t": x0_mse.mean(),
        "eps_mse_per_t": eps_mse.mean(),
        "x0_mse": float(x0_mse.mean().mean()),
    }
