"""The variance-preserving process of DDPM (Ho et al. 2020): q(x_t|x_{t-1}) = N(sqrt(1-beta_t) x_{t-1}, beta_t I)."""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.process.base import NoiseProcess


class VPProcess(NoiseProcess):
    """DDPM's process from betas (float64, length T); exposes the paper's tables by name.

    alpha_t = 1 - beta_t, alpha_bar_t = prod_{s<=t} alpha_s (Ho et al. Eq. 4), beta_tilde_t the
    posterior variance (Eq. 7). Indices are 0-based: index t holds the paper's t+1.
    """

    kind = "vp"

    def __init__(self, betas: Tensor, timestep_map: Tensor | None = None):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must be a 1-D tensor with values in (0, 1]")
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bar = torch.cumprod(self.alphas, 0)
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        # beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t (Ho et al. Eq. 7)
        self.beta_tilde = (1 - self.alpha_bar_prev) / (1 - self.alpha_bar) * betas
        super().__init__(self.alpha_bar.sqrt(), ((1 - self.alpha_bar) / self.alpha_bar).sqrt(), timestep_map)

    def _respaced(self, a: Tensor, sigma: Tensor, timestep_map: Tensor) -> "VPProcess":
        # beta of the respaced chain: 1 - alpha_bar_t / alpha_bar_s between kept steps (improved DDPM Sec. 4).
        alpha_bar = a**2
        prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        return VPProcess(1 - alpha_bar / prev, timestep_map)


class VEProcess(NoiseProcess):
    """NCSN's variance-exploding process x_t = x_0 + sigma_t eps with noise levels sigma (float64, increasing)."""

    kind = "ve"

    def __init__(self, sigmas: Tensor, timestep_map: Tensor | None = None):
        sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
        if sigmas.ndim != 1 or not bool((sigmas > 0).all()) or not bool((sigmas[1:] > sigmas[:-1]).all()):
            raise ValueError("sigmas must be a positive, strictly increasing 1-D tensor")
        self.sigmas = sigmas
        super().__init__(torch.ones_like(sigmas), sigmas, timestep_map)

    def _respaced(self, a: Tensor, sigma: Tensor, timestep_map: Tensor) -> "VEProcess":
        return VEProcess(sigma, timestep_map)
