"""The one interface samplers, guidance and evaluation see: a Denoiser returns a Prediction at (x_t, t)."""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from difflab.process import NoiseProcess
from difflab.process.base import bcast  # re-exported: the denoiser layer and everything above use it


class Prediction(NamedTuple):
    """Everything a sampler may need at (x_t, t) for the reverse step t -> s. Tensors shaped like x.

    score = grad_x log p_t(x) = -eps / std_t, with std_t = sqrt(1 - alpha_bar_t) for VP (Song & Ermon 2019).
    mean and log_var describe p(x_s | x_t) = N(mean, exp(log_var)).
    """

    x0: Tensor
    eps: Tensor
    score: Tensor
    mean: Tensor
    log_var: Tensor


class Denoiser(Protocol):
    """A trained network, an oracle or a guided wrapper: anything that predicts x_0 and eps at (x_t, t)."""

    process: NoiseProcess

    def __call__(self, x: Tensor, t: Tensor | int, y: Tensor | None = None, s: Tensor | int | None = None) -> Prediction: ...


def as_timesteps(t: Tensor | int, batch: int) -> Tensor:
    """Integer timesteps as a (B,) long tensor on the CPU (tables live there)."""
    t = torch.as_tensor(t).long().cpu()
    return t.expand(batch).clone() if t.ndim == 0 else t


def complete_prediction(
    process: NoiseProcess, x: Tensor, t: Tensor, s: Tensor, x0: Tensor, eps: Tensor, log_var: Tensor | None = None
) -> Prediction:
    """Fill in score and the reverse step t -> s from (x0, eps); log_var defaults to the posterior's ('fixed small')."""
    score = -eps / bcast(process.std(t), x)
    # mu_theta(x_t, t) = mu_tilde(x_t, x0_theta) (Ho et al. Eq. 7 with the predicted x_0); a final step (s = -1) returns x0.
    mean = process.posterior_mean(x0, x, t, s)
    if log_var is None:
        log_var = bcast(process.posterior_log_var_clipped(t, s), x).expand_as(x)
    return Prediction(x0=x0, eps=eps, score=score, mean=mean, log_var=log_var)
