"""The exact noisy classifier of Gaussian-mixture data: p(y | x_t) = responsibility of component y at noise level t.

Under x_t = a_t (x_0 + sigma_t eps) the noisy marginal of component k is N(a_t mu_k, a_t^2 (C_k + sigma_t^2 I)), so
Bayes' rule gives p(k | x_t) in closed form (the oracle's own responsibilities). With it, guidance is checked
without training: at s = 1 the guided score grad log p_t(x) + grad log p(y|x_t) is exactly grad log p_t(x | y).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from difflab.denoiser import as_timesteps


class MixtureClassifier:
    """A NoisyClassifier for the data of a `GMMOracle`: logits log w_k + log N(x_t / a_t; mu_k, C_k + sigma_t^2 I).

    Self-contained: it reads only the mixture's means, covs (full (K, d, d) or diagonal (K, d)) and weights, and keeps
    its own eigen-decomposition C_k = U_k diag(lam_k) U_k^T, so C_k + sigma^2 I is inverted in closed form per row.
    """

    def __init__(self, oracle):
        mix = oracle.mixture
        self.process = oracle.process
        self.num_classes = int(mix.means.shape[0])
        self.means = mix.means.double()  # (K, d)
        self.log_w = mix.weights.double().log()  # (K,)
        covs = mix.covs.double()
        self.diagonal = covs.ndim == 2
        if self.diagonal:
            self.lam, self.U = covs, None
        else:
            self.lam, self.U = torch.linalg.eigh(0.5 * (covs + covs.transpose(1, 2)))  # (K, d), (K, d, d)

    def __call__(self, x: Tensor, t: Tensor | int) -> Tensor:
        """(B, K) logits (unnormalised log responsibilities), float64, differentiable in x."""
        t = as_timesteps(t, x.shape[0])
        a, sigma = self.process.a(t).to(x.device), self.process.sigma(t).to(x.device)
        x_hat = x.double().reshape(x.shape[0], -1) / a[:, None]  # (B, d)
        diff = x_hat[:, None, :] - self.means[None]  # (B, K, d)
        z = diff if self.diagonal else torch.einsum("bkd,kde->bke", diff, self.U)  # coordinates in each eigenbasis
        var = self.lam[None] + sigma.reshape(-1, 1, 1) ** 2  # (B, K, d): eigenvalues of C_k + sigma^2 I
        d = x_hat.shape[1]
        # log p(x_t | k) = log N(x_hat; ...) - d log a_t: the a_t term is the same for every k, so it drops out of the softmax.
        return self.log_w - 0.5 * ((z**2 / var).sum(-1) + var.log().sum(-1) + d * math.log(2 * math.pi))
