"""The VAE's bound: negative ELBO per dimension (Kingma & Welling 2014, Eq. 10), beta-weighted for training.

For an image x with D = C*H*W pixels and a latent z of dimension K:

  -ELBO(x) = E_q(z|x)[-log p(x|z)] + KL(q(z|x) || N(0, I)),   q(z|x) = N(mu, diag(sigma^2))
  KL       = 1/2 sum_k (mu_k^2 + sigma_k^2 - 1 - log sigma_k^2)                      (Kingma & Welling, App. B)
  gaussian -log p(x|z) = sum_i [ (x_i - m_i)^2 / (2 s^2) + log s + 1/2 log 2 pi ]    (a density on the [-1, 1] scale)
  bernoulli -log p(x|z) = sum_i BCE(logit_i, (x_i + 1) / 2)

Every term is divided by D ("per dimension", in nats). The training loss is rec + beta * KL (Higgins et al. 2017);
the reported ELBO always has beta = 1. The expectation over q is one reparameterised draw z = mu + sigma * eps,
with eps drawn by the caller (the VAE run's TrainTask draws it per global batch, so resume and DDP are exact).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.losses.gaussian import LN2, discretized_gaussian_log_likelihood
from difflab.nets.vae import VAE, VAEConfig, VAEOutput

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class ELBOTerms(NamedTuple):
    """Per-example terms (B,), nats per dimension."""

    rec: Tensor  # -log p(x|z) / D
    kl: Tensor  # KL(q(z|x) || p(z)) / D

    @property
    def neg_elbo(self) -> Tensor:
        return self.rec + self.kl


def gaussian_kl_standard(mu: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mu, diag e^log_var) || N(0, I)) summed over the last dimension: (B, K) -> (B,)."""
    return 0.5 * (mu.pow(2) + log_var.exp() - 1.0 - log_var).sum(dim=-1)


def reconstruction_nll(x: Tensor, decoded: Tensor, log_std: Tensor, likelihood: str) -> Tensor:
    """-log p(x|z) summed over pixels, (B,): Gaussian density with std e^log_std, or Bernoulli with logits `decoded`."""
    if likelihood == "bernoulli":
        nll = F.binary_cross_entropy_with_logits(decoded, (x + 1) / 2, reduction="none")
    else:
        nll = 0.5 * ((x - decoded) * torch.exp(-log_std)).pow(2) + log_std + HALF_LOG_2PI
    return nll.flatten(1).sum(dim=1)


def _at_least_fp32(t: Tensor) -> Tensor:
    """Half-precision network outputs (autocast) are promoted; float32 and float64 are kept."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def elbo_terms(x: Tensor, out: VAEOutput, likelihood: str) -> ELBOTerms:
    """Reconstruction and KL terms of -ELBO per dimension for a batch x (B, C, H, W) and the VAE's output on it."""
    d = x[0].numel()
    x, decoded, log_std, mu, log_var = (_at_least_fp32(t) for t in (x, out.decoded, out.log_std, out.mu, out.log_var))
    rec = reconstruction_nll(x, decoded, log_std, likelihood) / d
    kl = gaussian_kl_standard(mu, log_var) / d
    return ELBOTerms(rec, kl)


def discretized_nll_bpd(x: Tensor, out: VAEOutput) -> Tensor:
    """-log P(x|z) in bits/dim, (B,), of the Gaussian decoder integrated over 8-bit bins (the convention of `difflab nll`)."""
    log_scales = out.log_std.expand_as(out.decoded)
    return -discretized_gaussian_log_likelihood(x, out.decoded, log_scales).flatten(1).mean(dim=1) / LN2


@torch.no_grad()
def evaluate_elbo(model: VAE, x: Tensor, *, repeats: int = 1, generator: torch.Generator | None = None, batch_size: int = 500) -> dict:
    """Monte-Carlo ELBO of images x under `model` (beta = 1), `repeats` draws of z per image.

    Returns nats/dim means over images: elbo_per_dim, rec_per_dim, kl_per_dim, their standard error, and for a
    Gaussian decoder `nll_bound_bpd`: -ELBO in bits/dim with the decoder integrated over 8-bit bins, an upper
    bound on the NLL comparable with `difflab nll` (the KL term is the same; only the decoder is discretised).
    """
    cfg: VAEConfig = model.cfg
    model.eval()
    rec_sum = torch.zeros(len(x), dtype=torch.float64)
    kl_sum = torch.zeros(len(x), dtype=torch.float64)
    bpd_sum = torch.zeros(len(x), dtype=torch.float64)
    device = next(model.parameters()).device
    for _ in range(repeats):
        for lo in range(0, len(x), batch_size):
            xb = x[lo:lo + batch_size].to(device)
            eps = torch.randn((len(xb), cfg.latent_dim), generator=generator).to(device)
            out = model(xb, eps)
            terms = elbo_terms(xb, out, cfg.likelihood)
            rec_sum[lo:lo + len(xb)] += terms.rec.double().cpu()
            kl_sum[lo:lo + len(xb)] += terms.kl.double().cpu()
            if cfg.likelihood == "gaussian":
                bpd_sum[lo:lo + len(xb)] += (discretized_nll_bpd(xb, out).double() + terms.kl.double() / LN2).cpu()
    rec, kl = rec_sum / repeats, kl_sum / repeats
    elbo = -(rec + kl)
    n = len(x)
    res = {"elbo_per_dim": float(elbo.mean()), "elbo_per_dim_se": float(elbo.std() / math.sqrt(n)) if n > 1 else math.nan,
           "rec_per_dim": float(rec.mean()), "kl_per_dim": float(kl.mean()), "n": n, "repeats": repeats, "likelihood": cfg.likelihood}
    if cfg.likelihood == "gaussian":
        res["nll_bound_bpd"] = float((bpd_sum / repeats).mean())
        res["decoder_std"] = float(model.log_std.exp())
    return res
