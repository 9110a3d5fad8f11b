"""A Gaussian mixture p(x_0) = sum_k w_k N(mu_k, C_k) in d dimensions, and its noisy marginals, all in float64.

Under x_hat = x_0 + sigma eps (the process's x_t / a_t) the marginal is again a mixture, with covariances
C_k + sigma^2 I; responsibilities and per-component posterior means are closed forms (Bishop 2006, Sec. 2.3.3).
Covariances are kept as eigen-decompositions C_k = U_k diag(lam_k) U_k^T, so that C_k + sigma^2 I inverts cheaply
for every sigma. A diagonal mixture (covs given as (K, d)) skips the rotations: the 64-D case stays cheap.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_CHUNK = 16384  # rows per block: keeps the (B, K, d) temporaries small for big sample sets


def _sum_last(v: Tensor) -> Tensor:
    """v.sum(-1) as a matrix product: torch's CPU reduction over a short last axis is ~30x slower."""
    return v @ torch.ones(v.shape[-1], dtype=v.dtype)


def _logsumexp(logits: Tensor) -> Tensor:
    """logsumexp over the components, (B, K) -> (B,)."""
    m = logits.max(1, keepdim=True).values
    return m[:, 0] + _sum_last((logits - m).exp()).log()


def _softmax(logits: Tensor) -> Tensor:
    """softmax over the components, (B, K); -inf logits (masked components) give 0."""
    e = (logits - logits.max(1, keepdim=True).values).exp()
    return e / _sum_last(e)[:, None]


class GaussianMixture:
    """p(x) = sum_k w_k N(x; mu_k, C_k); means (K, d), covs (K, d, d) or diagonal (K, d), weights (K,)."""

    def __init__(self, means: Tensor, covs: Tensor, weights: Tensor):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        covs = torch.as_tensor(covs, dtype=torch.float64)
        w = torch.as_tensor(weights, dtype=torch.float64)
        if self.means.ndim != 2:
            raise ValueError(f"means must be (K, d); got {tuple(self.means.shape)}")
        self.K, self.d = self.means.shape
        if w.shape != (self.K,) or not bool((w > 0).all()):
            raise ValueError(f"weights must be ({self.K},) and positive")
        self.weights = w / w.sum()
        self.diagonal = covs.ndim == 2
        if self.diagonal:
            if covs.shape != (self.K, self.d) or not bool((covs > 0).all()):
                raise ValueError(f"diagonal covs must be ({self.K}, {self.d}) and positive")
            self.lam, self.U = covs, None
        else:
            if covs.shape != (self.K, self.d, self.d):
                raise ValueError(f"covs must be ({self.K}, {self.d}, {self.d}) or diagonal ({self.K}, {self.d})")
            self.lam, self.U = torch.linalg.eigh(0.5 * (covs + covs.transpose(1, 2)))
            if not bool((self.lam > 0).all()):
                raise ValueError("covariances must be positive definite")
        self.covs = covs

    # ----- closed forms at noise level sigma (sigma = 0: the data itself) -----------------------------
    def _chunk(self, x: Tensor, sigma: Tensor, want_eps: bool) -> tuple[Tensor, Tensor | None]:
        """(log w_k + log N(x; mu_k, C_k + sigma^2 I) (B, K), and with want_eps sum_k-ready terms) for one block.

        Returns logits and a function-free tuple: eps needs the responsibilities, so the caller finishes it
        with `_eps_from`. Diagonal mixtures at one sigma for the block use matrix products only (no (B, K, d)).
        """
        if self.diagonal and bool((sigma == sigma[0]).all()):
            inv = 1 / (self.lam + sigma[0] ** 2)  # (K, d) precisions
            q = (x * x) @ inv.T - 2 * x @ (self.means * inv).T + _sum_last(self.means**2 * inv)
            logits = self.weights.log() - 0.5 * (q - _sum_last(inv.log()) + self.d * math.log(2 * math.pi))
            return logits, ("diag", inv) if want_eps else None
        diff = x[:, None, :] - self.means[None]
        z = diff if self.diagonal else torch.einsum("bkd,kde->bke", diff, self.U)  # U_k^T (x - mu_k)
        var = self.lam[None] + sigma.reshape(-1, 1, 1) ** 2  # eigenvalues of C_k + sigma^2 I
        logits = self.weights.log() - 0.5 * (_sum_last(z * z / var) + _sum_last(var.log()) + self.d * math.log(2 * math.pi))
        return logits, ("full", z / var) if want_eps else None

    def _eps_from(self, x: Tensor, r: Tensor, aux) -> Tensor:
        """sum_k r_k (C_k + sigma^2 I)^{-1} (x - mu_k), (B, d)."""
        kind, v = aux
        if kind == "diag":
            return x * (r @ v) - r @ (self.means * v)
        u = r[..., None] * v  # (B, K, d) in each component's eigenbasis
        return _sum_last(u.transpose(1, 2)) if self.diagonal else torch.einsum("bke,kde->bd", u, self.U)

    def _blocks(self, x: Tensor, sigma: Tensor | float):
        x = x.double()
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).expand(x.shape[0])
        for i in range(0, x.shape[0], _CHUNK):
            yield i, x[i : i + _CHUNK], sigma[i : i + _CHUNK]

    def log_prob(self, x: Tensor, sigma: Tensor | float = 0.0) -> Tensor:
        """log p_sigma(x) of the mixture convolved with N(0, sigma^2 I); x (B, d) -> (B,) float64."""
        return torch.cat([_logsumexp(self._chunk(xs, sg, False)[0]) for _, xs, sg in self._blocks(x, sigma)])

    def responsibilities(self, x: Tensor, sigma: Tensor | float = 0.0, log_w: Tensor | None = None) -> Tensor:
        """p(k | x) under the noisy mixture, (B, K); log_w overrides the log-weights per row (class conditioning)."""
        out = []
        for i, xs, sg in self._blocks(x, sigma):
            logits = self._chunk(xs, sg, False)[0]
            if log_w is not None:
                logits = logits - self.weights.log() + log_w[i : i + _CHUNK]
            out.append(_softmax(logits))
        return torch.cat(out)

    def eps_hat(self, x: Tensor, sigma: Tensor | float, log_w: Tensor | None = None) -> Tensor:
        """E[eps | x_hat = x_0 + sigma eps] = sigma sum_k r_k (C_k + sigma^2 I)^{-1} (x_hat - mu_k); x (B, d) float64.

        Written this way (not (x_hat - E[x_0|x_hat]) / sigma) it has no cancellation at small sigma.
        """
        out = []
        for i, xs, sg in self._blocks(x, sigma):
            logits, aux = self._chunk(xs, sg, True)
            if log_w is not None:
                logits = logits - self.weights.log() + log_w[i : i + _CHUNK]
            out.append(sg[:, None] * self._eps_from(xs, _softmax(logits), aux))
        return torch.cat(out)

    # ----- sampling and entropy ------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None, return_labels: bool = False):
        """n exact draws (n, d) float64: k ~ Categorical(w), x = mu_k + U_k sqrt(lam_k) z."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.d, generator=generator, dtype=torch.float64) * self.lam[k].sqrt()
        x = self.means[k] + (z if self.diagonal else torch.einsum("nde,ne->nd", self.U[k], z))
        return (x, k) if return_labels else x

    def entropy(self, n: int = 200_000, generator: torch.Generator | None = None) -> tuple[float, float]:
        """Monte-Carlo entropy H = -E log p(x_0) with its standard error, from n exact draws."""
        lp = self.log_prob(self.sample(n, generator))
        return float(-lp.mean()), float(lp.std() / math.sqrt(n))


def ring_mixture(K: int = 8, radius: float = 0.8, std_tangent: float = 0.08, std_radial: float = 0.04,
                 weights: Tensor | None = None) -> GaussianMixture:
    """K elongated modes on a circle (the standard 2-D toy), unequal weights w_k ∝ 1 + k/K by default.

    Each mode is stretched along the circle, so a sampler's covariance errors show up in both directions.
    """
    phi = 2 * math.pi * torch.arange(K, dtype=torch.float64) / K
    means = radius * torch.stack([phi.cos(), phi.sin()], 1)
    tangent = torch.stack([-phi.sin(), phi.cos()], 1)
    radial = torch.stack([phi.cos(), phi.sin()], 1)
    covs = std_tangent**2 * tangent[:, :, None] * tangent[:, None, :] + std_radial**2 * radial[:, :, None] * radial[:, None, :]
    w = 1 + torch.arange(K, dtype=torch.float64) / K if weights is None else weights
    return GaussianMixture(means, covs, w)


def random_diagonal_mixture(d: int = 64, K: int = 4, scale: float = 0.5,
                            generator: torch.Generator | None = None) -> GaussianMixture:
    """K modes in d dimensions with diagonal covariances: means ~ N(0, scale^2 I), stds in [0.05, 0.3], weights in [1, 3]."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    means = scale * torch.randn(K, d, generator=g, dtype=torch.float64)
    stds = 0.05 + 0.25 * torch.rand(K, d, generator=g, dtype=torch.float64)
    w = 1 + 2 * torch.rand(K, generator=g, dtype=torch.float64)
    return GaussianMixture(means, stds**2, w)
