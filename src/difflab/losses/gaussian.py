"""Gaussian math of the variational bound: KL between diagonal Gaussians and the discretized decoder (Ho et al. 2020).

Everything is evaluated in float64 (the KL of the low-noise steps subtracts nearly equal numbers) and
returned in the promoted dtype of the inputs, so gradients flow back into a float32 network unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LN2 = math.log(2.0)
BIN_HALF_WIDTH = 1.0 / 255.0  # data in [-1, 1] with 256 levels: bins of width 2/255 centred on the levels


def _f64(*xs: Tensor | float) -> tuple[Tensor, ...]:
    """Cast to float64; Python scalars go straight to float64 (as_tensor alone would round them to float32)."""
    return tuple(x.to(torch.float64) if isinstance(x, Tensor) else torch.tensor(x, dtype=torch.float64) for x in xs)


def _out_dtype(*xs: Tensor | float) -> torch.dtype:
    dtypes = [x.dtype for x in xs if isinstance(x, Tensor) and x.is_floating_point()]
    out = dtypes[0] if dtypes else torch.get_default_dtype()
    for d in dtypes[1:]:
        out = torch.promote_types(out, d)
    return out


def mean_flat(x: Tensor) -> Tensor:
    """Mean over all but the batch dimension: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def normal_kl(mean1: Tensor | float, logvar1: Tensor | float, mean2: Tensor | float, logvar2: Tensor | float) -> Tensor:
    """Elementwise KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) in nats, the terms of Ho et al. Eq. 5; arguments broadcast.

    KL = 1/2 (logvar2 - logvar1 + e^(logvar1 - logvar2) + (mean1 - mean2)^2 e^-logvar2 - 1).
    """
    dtype = _out_dtype(mean1, logvar1, mean2, logvar2)
    m1, lv1, m2, lv2 = _f64(mean1, logvar1, mean2, logvar2)
    kl = 0.5 * (lv2 - lv1 + torch.exp(lv1 - lv2) + (m1 - m2) ** 2 * torch.exp(-lv2) - 1.0)
    return kl.to(dtype)


def _log_bin_mass(lo: Tensor, hi: Tensor) -> Tensor:
    """log(Phi(hi) - Phi(lo)) for lo < hi (standardised bin edges), accurate in both tails.

    A bin above the mean is reflected (Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi)) so the difference is always
    taken in the lower tail, where log_ndtr keeps full relative precision; then
    log(Phi(b) - Phi(a)) = log Phi(b) + log(1 - exp(log Phi(a) - log Phi(b))).
    """
    flip = (lo + hi) > 0
    a = torch.where(flip, -hi, lo)
    b = torch.where(flip, -lo, hi)
    log_b = torch.special.log_ndtr(b)
    return log_b + torch.log(-torch.expm1(torch.special.log_ndtr(a) - log_b))


def discretized_gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log P(x) in nats, elementwise, of N(means, e^(2 log_scales)) integrated over x's bin (Ho et al. 2020, Eq. 13).

    x holds 8-bit data rescaled to [-1, 1]: the bin of x is [x - 1/255, x + 1/255], except that the edge
    bins extend to -inf (x = -1) and +inf (x = +1), so the 256 bin masses sum to one.
    The CDF is the exact one (torch.special.log_ndtr), not improved DDPM's tanh approximation: that
    approximation's error (~1e-4 in the CDF) is of the order of a bin's mass when the decoder is
    sharp, and its 1e-12 clamp caps the NLL and zeroes the gradient of badly wrong predictions.
    Working in log space on the lower tail keeps the result finite and accurate for any mean and scale.
    """
    dtype = _out_dtype(x, means, log_scales)
    x, means, log_scales = torch.broadcast_tensors(*_f64(x, means, log_scales))
    inv_std = torch.exp(-log_scales)
    centered = x - means
    hi = inv_std * (centered + BIN_HALF_WIDTH)  # standardised upper edge of x's bin
    lo = inv_std * (centered - BIN_HALF_WIDTH)  # standardised lower edge
    log_left = torch.special.log_ndtr(hi)  # x = -1: P(X <= -1 + 1/255)
    log_right = torch.special.log_ndtr(-lo)  # x = +1: P(X >= 1 - 1/255)
    log_mid = _log_bin_mass(lo, hi)
    log_probs = torch.where(x < -0.999, log_left, torch.where(x > 0.999, log_right, log_mid))
    return log_probs.to(dtype)
