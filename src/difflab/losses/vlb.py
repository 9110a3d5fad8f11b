"""Terms of the variational bound L_vlb = L_0 + sum_{t>0} L_{t-1} + L_T in bits per dimension (Ho et al. 2020, Eq. 5).

Indices are difflab's 0-based timesteps: the term at index t > 0 is KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)),
the term at index 0 is the decoder NLL -log p(x_0|x_1) (the paper's L_0), and the prior term compares
q(x_T|x_0) with the prior. All terms are means over dimensions divided by ln 2 ("bits/dim").
They take a `Prediction` (mean, log_var of the step t -> t-1), so they apply to any Denoiser.
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.denoiser import Denoiser, Prediction, as_timesteps, bcast
from difflab.losses.gaussian import LN2, discretized_gaussian_log_likelihood, mean_flat, normal_kl
from difflab.process import NoiseProcess


def predict_step(denoiser: Denoiser, x_t: Tensor, t: Tensor | int, y: Tensor | None = None) -> Prediction:
    """The denoiser's prediction for the one-step reverse transition t -> t-1 (the step the bound is made of)."""
    t = as_timesteps(t, x_t.shape[0])
    return denoiser(x_t, t, y, s=t - 1)


def vlb_terms(
    denoiser_or_pred: Denoiser | Prediction,
    x0: Tensor,
    x_t: Tensor,
    t: Tensor | int,
    *,
    process: NoiseProcess | None = None,
    y: Tensor | None = None,
) -> Tensor:
    """Per-example L_t in bits/dim, (B,): KL to the true posterior for t > 0, decoder NLL for t = 0 (Ho et al. Eq. 5).

    Given a Denoiser, it is called for the step t -> t-1 (with class labels y) and its process is used;
    given a Prediction (of that step), `process` is required. The true posterior
    q(x_{t-1}|x_t,x_0) = N(mu_tilde, beta_tilde) is Eq. 7; at t = 0 its variance is clipped (improved DDPM)
    only so that the unused KL branch stays finite. Computed in float64, returned in the predictions' dtype.
    """
    t = as_timesteps(t, x0.shape[0])
    if isinstance(denoiser_or_pred, Prediction):
        if process is None:
            raise TypeError("vlb_terms needs `process=` when given a Prediction")
        pred = denoiser_or_pred
    else:
        process = denoiser_or_pred.process if process is None else process
        pred = predict_step(denoiser_or_pred, x_t, t, y)
    s = t - 1
    x0_64, xt_64 = x0.double(), x_t.double()
    true_mean = process.posterior_mean(x0_64, xt_64, t, s)
    true_log_var = bcast(process.posterior_log_var_clipped(t, s), x0_64)
    kl = mean_flat(normal_kl(true_mean, true_log_var, pred.mean, pred.log_var)) / LN2
    log_scales = 0.5 * pred.log_var
    decoder_nll = -mean_flat(discretized_gaussian_log_likelihood(x0, pred.mean, log_scales)) / LN2
    terms = torch.where(t.to(kl.device) == 0, decoder_nll, kl)
    return terms.to(torch.promote_types(x0.dtype, pred.mean.dtype))


def prior_log_var(process: NoiseProcess) -> float:
    """log of the prior variance of x_T: a_T^2 (1 + sigma_T^2), which is 1 for VP (N(0, I)) and 1 + sigma_max^2 for VE."""
    T = torch.tensor([process.T - 1])
    return float((process.a(T) ** 2 * (1 + process.sigma(T) ** 2)).log())


def prior_bpd(process: NoiseProcess, x0: Tensor) -> Tensor:
    """L_T = KL(q(x_T|x_0) || p(x_T)) in bits/dim, (B,) (Ho et al. Eq. 5); constant in the model's parameters."""
    T = torch.full((x0.shape[0],), process.T - 1, dtype=torch.long)
    x0_64 = x0.double()
    mean = bcast(process.a(T), x0_64) * x0_64
    log_var = bcast(process.std(T) ** 2, x0_64).log()
    return mean_flat(normal_kl(mean, log_var, 0.0, prior_log_var(process))) / LN2
