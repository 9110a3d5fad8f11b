"""Inception Score (Salimans et al. 2016): IS = exp(E_x KL(p(y|x) || p(y))), as mean and std over splits."""

from __future__ import annotations

import numpy as np

from difflab.errors import UserError


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """log p(y|x) from class logits (N, K), stable: z - max - log sum exp(z - max)."""
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _score_from_log_probs(log_p: np.ndarray, splits: int) -> tuple[float, float]:
    """Split the N rows into `splits` consecutive parts (as improved-gan); IS per part; mean and population std."""
    n = len(log_p)
    if splits < 1 or n < splits:
        raise UserError(f"inception score needs at least one sample per split; got {n} samples for {splits} splits")
    scores = []
    for i in range(splits):
        part = log_p[i * n // splits:(i + 1) * n // splits]  # (n_i, K)
        p = np.exp(part)
        log_p_y = np.log(p.mean(axis=0))  # marginal p(y) of the part, (K,)
        with np.errstate(invalid="ignore"):  # 0 * (-inf) where p(y|x) = 0 contributes 0
            kl = np.where(p > 0, p * (part - log_p_y), 0.0).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def inception_score(logits: np.ndarray, *, splits: int = 10) -> tuple[float, float]:
    """IS (mean, std) from classifier logits (N, K), computed in float64 via log-softmax."""
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise UserError(f"inception score needs class logits of shape (samples, classes >= 2); got {logits.shape}")
    if not np.isfinite(logits).all():
        raise UserError("inception score: the logits contain NaN or inf; check the generated images")
    return _score_from_log_probs(_log_softmax(logits), splits)


def inception_score_from_probs(probs: np.ndarray, *, splits: int = 10) -> tuple[float, float]:
    """IS (mean, std) from class probabilities p(y|x) (N, K) whose rows sum to 1."""
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise UserError(f"inception score needs class probabilities of shape (samples, classes >= 2); got {probs.shape}")
    if not np.isfinite(probs).all() or (probs < 0).any() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise UserError("inception score: probabilities must be finite, non-negative and sum to 1 per row; pass logits instead")
    with np.errstate(divide="ignore"):
        return _score_from_log_probs(np.log(probs), splits)
