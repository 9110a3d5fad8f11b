"""Fréchet distance between Gaussians fitted to feature sets: FID (Heusel et al. 2017) and sFID (Nash et al. 2021).

    d^2 = ||mu_1 - mu_2||^2 + Tr(sigma_1 + sigma_2 - 2 (sigma_1 sigma_2)^{1/2})      (Dowson & Landau 1982)

sFID is the same distance on the 2023-d `spatial` features (first 7 channels of Inception's mixed_6/conv).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

from difflab.errors import UserError
from difflab.eval.metrics.features import FeatureStats, as_stats, check_same_dim

SQRTM_RESIDUAL_TOL = 1e-5  # relative ||X X - A||_F / ||A||_F above which the product counts as near-singular
IMAG_TOL = 1e-3  # largest imaginary part tolerated on the diagonal of sqrtm (as pytorch-fid / TTUR)


def _sqrtm(a: np.ndarray) -> tuple[np.ndarray, bool]:
    """scipy's Schur square root and whether it is trustworthy (finite and squares back to `a`)."""
    with warnings.catch_warnings():  # singularity is detected below and handled by the caller
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        x = scipy.linalg.sqrtm(a)
    if not np.isfinite(x).all():
        return x, False
    residual = np.linalg.norm(x @ x - a) / max(np.linalg.norm(a), np.finfo(np.float64).tiny)
    return x, bool(residual <= SQRTM_RESIDUAL_TOL)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     *, eps: float = 1e-6) -> float:
    """Fréchet distance of N(mu1, sigma1) and N(mu2, sigma2) in float64 (Dowson & Landau 1982; FID eq. of Heusel et al.).

    When sigma1 sigma2 is near-singular, eps*I is added to both covariances (as TTUR / pytorch-fid do);
    a tiny imaginary part of the square root from rounding is dropped, a large one raises.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    check_same_dim(mu1.shape[0], mu2.shape[0])
    diff = mu1 - mu2
    covmean, ok = _sqrtm(sigma1 @ sigma2)
    if not ok:
        warnings.warn(f"FID: the covariance product is near-singular; adding {eps:g}*I to both covariances", stacklevel=2)
        offset = eps * np.eye(sigma1.shape[0])
        covmean, ok = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if not np.isfinite(covmean).all():
            raise UserError("FID: the matrix square root of the covariance product is not finite even after "
                            f"adding {eps:g}*I; the covariances are degenerate, use more samples")
    if np.iscomplexobj(covmean):
        imag = float(np.abs(np.diagonal(covmean).imag).max())
        if imag > IMAG_TOL:
            raise UserError(f"FID: the covariance square root has an imaginary part of {imag:.3g} on its diagonal; "
                            "the covariances are ill-conditioned, use more samples")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def check_enough_samples(stats: FeatureStats, name: str, metric: str = "FID") -> None:
    """A full-rank d x d covariance needs at least d + 1 samples; with fewer, FID is dominated by the estimate's rank."""
    if stats.n <= stats.dim:
        raise UserError(f"{metric} on {stats.dim}-d features needs at least {stats.dim + 1} {name} samples "
                        f"(a full-rank covariance); got {stats.n}. Use more samples or a lower-dimensional feature")


def fid(real: np.ndarray | FeatureStats, fake: np.ndarray | FeatureStats, *, eps: float = 1e-6,
        metric: str = "FID") -> float:
    """FID between two feature sets (arrays (N, d) or their FeatureStats); sFID when given spatial features."""
    real_stats, fake_stats = as_stats(real, "real"), as_stats(fake, "fake")
    check_same_dim(real_stats.dim, fake_stats.dim)
    check_enough_samples(real_stats, "real", metric)
    check_enough_samples(fake_stats, "fake", metric)
    return frechet_distance(real_stats.mu, real_stats.sigma, fake_stats.mu, fake_stats.sigma, eps=eps)
