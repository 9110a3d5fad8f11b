"""k-NN manifold metrics: precision and recall (Kynkäänniemi et al. 2019) and density and coverage (Naeem et al. 2020).

Each sample's manifold ball has radius r_k(x) = distance to its k-th nearest neighbour in its own set.
  precision = fraction of fake samples inside some real ball
  recall    = fraction of real samples inside some fake ball
  density   = (1 / kM) sum_j sum_i 1[fake_j in real ball i]           (Naeem et al. 2020)
  coverage  = (1 / N) sum_i 1[some fake_j in real ball i]             (Naeem et al. 2020)
Balls are closed (<=), as in Kynkäänniemi et al. and guided-diffusion; the `prdc` package uses < (differs only on ties).
Distances are computed in row blocks of at most `block_rows` x N, so no N x N matrix is ever held.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from difflab.errors import UserError
from difflab.eval.metrics.features import FeatureStats, as_features, check_same_dim

BLOCK_BYTES = 256 * 2**20  # budget for one block of distances when block_rows is None


class PRDC(NamedTuple):
    precision: float
    recall: float
    density: float
    coverage: float


def _block_rows(n_cols: int, block_rows: int | None) -> int:
    """Rows per block: as given, or as many as fit BLOCK_BYTES of float64 distances."""
    if block_rows is not None:
        if block_rows < 1:
            raise UserError(f"block_rows must be at least 1; got {block_rows}")
        return block_rows
    return max(1, BLOCK_BYTES // (8 * max(n_cols, 1)))


def _compute_dtype(*arrays: np.ndarray) -> np.dtype:
    """float64 when any input is float64 (exact comparisons), else float32 (half the memory, twice the speed)."""
    return np.result_type(np.float32, *(a.dtype for a in arrays))


def _sq_norms(x: np.ndarray, dtype: np.dtype, block_rows: int = 4096) -> np.ndarray:
    """Squared row norms (N,), summed in float64 a block at a time (no float64 copy of the whole set)."""
    out = np.empty(len(x), dtype)
    for start in range(0, len(x), block_rows):
        x64 = np.asarray(x[start:start + block_rows], np.float64)
        out[start:start + block_rows] = np.einsum("ij,ij->i", x64, x64)
    return out


def _sq_distances(a: np.ndarray, a_sq: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """||a_i - b_j||^2 = |a_i|^2 + |b_j|^2 - 2 a_i.b_j for a block (B, d) against (M, d) -> (B, M), clipped at 0."""
    d = a @ b.T
    d *= -2.0
    d += a_sq[:, None]
    d += b_sq[None, :]
    np.maximum(d, 0.0, out=d)
    return d


def _knn_sq_radii(x: np.ndarray, x_sq: np.ndarray, k: int, block_rows: int) -> np.ndarray:
    """Squared distance from each row to its k-th nearest other row (N,), one row block at a time."""
    n = len(x)
    radii = np.empty(n, x.dtype)
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        d = _sq_distances(x[start:stop], x_sq[start:stop], x, x_sq)  # (B, N)
        rows = np.arange(stop - start)
        d[rows, start + rows] = 0.0  # self-distance exactly 0: index 0 after partition, so index k is the k-th neighbour
        radii[start:stop] = np.partition(d, k, axis=1)[:, k]
    return radii


def _prepare(real, fake, k: int, metric: str):
    x, y = as_features(real, "real", metric), as_features(fake, "fake", metric)
    check_same_dim(x.shape[1], y.shape[1])
    if k < 1:
        raise UserError(f"{metric} needs nearest_k >= 1; got {k}")
    for name, s in (("real", x), ("fake", y)):
        if len(s) <= k:
            raise UserError(f"{metric} with k={k} needs more than {k} {name} samples (for k-th neighbour radii); got {len(s)}")
    dtype = _compute_dtype(x, y)
    return np.asarray(x, dtype), np.asarray(y, dtype), dtype


def knn_radii(features: np.ndarray, k: int = 3, *, block_rows: int | None = None) -> np.ndarray:
    """Distance from each feature vector to its k-th nearest neighbour in the same set (N,) (Kynkäänniemi et al. 2019)."""
    x, _, dtype = _prepare(features, features, k, "k-NN radii")
    return np.sqrt(_knn_sq_radii(x, _sq_norms(x, dtype), k, _block_rows(len(x), block_rows)))


def prdc(real: np.ndarray | FeatureStats, fake: np.ndarray | FeatureStats, *, k: int = 3,
         block_rows: int | None = None) -> PRDC:
    """Precision, recall, density and coverage with k-NN balls, in one blockwise pass over real x fake distances."""
    x, y, dtype = _prepare(real, fake, k, "precision/recall")
    x_sq, y_sq = _sq_norms(x, dtype), _sq_norms(y, dtype)
    r_real = _knn_sq_radii(x, x_sq, k, _block_rows(len(x), block_rows))  # (N,) squared radii of real balls
    r_fake = _knn_sq_radii(y, y_sq, k, _block_rows(len(y), block_rows))  # (M,) squared radii of fake balls

    in_real = np.zeros(len(y), bool)  # fake j inside some real ball (precision)
    real_balls_hit = np.zeros(len(y), np.int64)  # number of real balls containing fake j (density)
    in_fake = np.zeros(len(x), bool)  # real i inside some fake ball (recall)
    nearest_fake = np.full(len(x), np.inf, dtype)  # min_j d^2(real_i, fake_j) (coverage)
    rows = _block_rows(len(x), block_rows)
    for start in range(0, len(y), rows):
        stop = min(start + rows, len(y))
        d = _sq_distances(y[start:stop], y_sq[start:stop], x, x_sq)  # (B, N): fake block x real
        within = d <= r_real[None, :]
        in_real[start:stop] = within.any(axis=1)
        real_balls_hit[start:stop] = within.sum(axis=1)
        del within
        in_fake |= (d <= r_fake[start:stop, None]).any(axis=0)
        np.minimum(nearest_fake, d.min(axis=0), out=nearest_fake)
    return PRDC(
        precision=float(in_real.mean()),
        recall=float(in_fake.mean()),
        density=float(real_balls_hit.sum() / (k * len(y))),
        coverage=float((nearest_fake <= r_real).mean()),
    )


def precision_recall(real: np.ndarray | FeatureStats, fake: np.ndarray | FeatureStats, *, k: int = 3,
                     block_rows: int | None = None) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019)."""
    res = prdc(real, fake, k=k, block_rows=block_rows)
    return res.precision, res.recall


def density_coverage(real: np.ndarray | FeatureStats, fake: np.ndarray | FeatureStats, *, k: int = 3,
                     block_rows: int | None = None) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020)."""
    res = prdc(real, fake, k=k, block_rows=block_rows)
    return res.density, res.coverage
