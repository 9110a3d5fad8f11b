"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3, over random subsets."""

from __future__ import annotations

import numpy as np

from difflab.errors import UserError
from difflab.eval.metrics.features import FeatureStats, as_features, check_same_dim


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / d + 1)^3 for all pairs: (m, d), (n, d) -> (m, n), in float64 (Bińkowski et al. 2018)."""
    d = x.shape[1]
    return (np.asarray(x, np.float64) @ np.asarray(y, np.float64).T / d + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two equal-size samples (m, d): off-diagonal means of k_xx, k_yy minus 2 mean k_xy (Gretton et al. 2012, Lemma 6)."""
    m = x.shape[0]
    if y.shape[0] != m or m < 2:
        raise UserError(f"unbiased MMD needs two samples of the same size >= 2; got {x.shape[0]} and {y.shape[0]}")
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    off_xx = k_xx.sum() - np.trace(k_xx)
    off_yy = k_yy.sum() - np.trace(k_yy)
    return float((off_xx + off_yy) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kid(real: np.ndarray | FeatureStats, fake: np.ndarray | FeatureStats, *, subsets: int = 100,
        subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID as (mean, std) of MMD^2 over `subsets` random subsets drawn without replacement.

    Each subset has m = min(subset_size, N_real, N_fake) rows of each set (as StyleGAN / clean-fid);
    the std is the population std over subsets (as torchmetrics). Randomness comes only from `seed`.
    """
    x, y = as_features(real, "real", "KID"), as_features(fake, "fake", "KID")
    check_same_dim(x.shape[1], y.shape[1])
    if subsets < 1 or subset_size < 2:
        raise UserError(f"KID needs subsets >= 1 and subset_size >= 2; got {subsets} and {subset_size}")
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise UserError(f"KID needs at least 2 real and 2 fake samples; got {len(x)} and {len(y)}")
    rng = np.random.default_rng(seed)
    scores = np.empty(subsets, np.float64)
    for i in range(subsets):
        xs = x[rng.choice(len(x), m, replace=False)]
        ys = y[rng.choice(len(y), m, replace=False)]
        scores[i] = mmd2_unbiased(xs, ys)
    return float(scores.mean()), float(scores.std())
