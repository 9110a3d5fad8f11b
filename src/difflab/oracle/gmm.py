"""The exact denoiser of Gaussian-mixture data: E[x_0 | x_t], eps and the score in closed form at every t.

Under x_t = a_t (x_0 + sigma_t eps) the noisy marginal is sum_k w_k N(a_t mu_k, a_t^2 (C_k + sigma_t^2 I)), so
E[eps | x_t] is the responsibility-weighted per-component posterior (see `GaussianMixture.eps_hat`). It speaks
the Denoiser interface, so every sampler is tested against the truth without training anything.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from difflab.denoiser import Prediction, as_timesteps, bcast, complete_prediction
from difflab.oracle.mixture import GaussianMixture
from difflab.process import NoiseProcess


class GMMOracle:
    """Denoiser for p(x_0) = sum_k w_k N(mu_k, C_k); x shaped (B, d) or (B, C, H, W) with C*H*W = d.

    y (optional, (B,) long) is a component index: the class-conditional data p(x_0 | y) = N(mu_y, C_y).
    Beyond the Denoiser protocol it offers `at_sigma(x_hat, sigma)`, exact at any continuous noise level,
    which the adaptive ODE solver uses. Computation is float64; results come back in x's dtype.
    """

    def __init__(self, process: NoiseProcess, means: Tensor, covs: Tensor, weights: Tensor,
                 var_type: Literal["fixed_small", "fixed_large"] = "fixed_small"):
        self.process = process
        self.mixture = GaussianMixture(means, covs, weights)
        if var_type not in ("fixed_small", "fixed_large"):
            raise ValueError(f"var_type must be 'fixed_small' or 'fixed_large'; got {var_type!r}")
        self.var_type = var_type

    @classmethod
    def from_mixture(cls, process: NoiseProcess, mixture: GaussianMixture, **kw) -> "GMMOracle":
        return cls(process, mixture.means, mixture.covs, mixture.weights, **kw)

    def _log_w(self, y: Tensor | None, batch: int) -> Tensor | None:
        """Per-row log-weights: the mixture's, or one-hot on component y (-inf elsewhere)."""
        if y is None:
            return None
        y = torch.as_tensor(y).long().cpu().reshape(-1).expand(batch)
        log_w = torch.full((batch, self.mixture.K), -torch.inf, dtype=torch.float64)
        log_w[torch.arange(batch), y] = 0.0
        return log_w

    def at_sigma(self, x_hat: Tensor, sigma: Tensor | float, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(E[x_0 | x_hat], E[eps | x_hat]) for x_hat = x_0 + sigma eps, any sigma > 0 (scalar or (B,)); shaped like x_hat."""
        b = x_hat.shape[0]
        flat = x_hat.detach().double().reshape(b, -1).cpu()
        if flat.shape[1] != self.mixture.d:
            raise ValueError(f"the oracle's data has d = {self.mixture.d}; x has {flat.shape[1]} values per example")
        sig = torch.as_tensor(sigma, dtype=torch.float64).cpu().reshape(-1).expand(b)
        eps = self.mixture.eps_hat(flat, sig, self._log_w(y, b))
        x0 = flat - sig[:, None] * eps
        back = lambda v: v.reshape(x_hat.shape).to(device=x_hat.device, dtype=x_hat.dtype)  # noqa: E731
        return back(x0), back(eps)

    def __call__(self, x: Tensor, t: Tensor | int, y: Tensor | None = None, s: Tensor | int | None = None) -> Prediction:
        """The exact Prediction at integer t for the reverse step t -> s (default t - 1)."""
        t = as_timesteps(t, x.shape[0])
        s = t - 1 if s is None else as_timesteps(s, x.shape[0])
        p = self.process
        x0, eps = self.at_sigma(x / bcast(p.a(t), x), p.sigma(t), y)
        log_var = None
        if self.var_type == "fixed_large":
            large = torch.where(s < 0, p.posterior_var(torch.ones_like(t), torch.zeros_like(t)), p.transition_var(t, s))
            log_var = bcast(large.log(), x).expand_as(x)
        return complete_prediction(p, x, t, s, x0, eps, log_var)

    # ----- the data distribution ------------------------------------------------------------------------
    def sample_data(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n exact draws of x_0, (n, d) float64."""
        return self.mixture.sample(n, generator)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x_0) of the data mixture, (B,) float64; x flattened per example."""
        return self.mixture.log_prob(x.reshape(x.shape[0], -1))

    def log_prob_t(self, x: Tensor, t: Tensor | int) -> Tensor:
        """log p_t(x_t) of the noisy marginal in x-space: log p_sigma(x / a_t) - d log a_t, (B,) float64."""
        t = as_timesteps(t, x.shape[0])
        a = self.process.a(t)
        flat = x.double().reshape(x.shape[0], -1) / a[:, None].to(x.device)
        return self.mixture.log_prob(flat, self.process.sigma(t)) - self.mixture.d * a.log()

    def entropy(self, n: int = 200_000, generator: torch.Generator | None = None) -> tuple[float, float]:
        """Monte-Carlo entropy of the data (mean log-likelihood of exact data is -H) and its standard error."""
        return self.mixture.entropy(n, generator)
