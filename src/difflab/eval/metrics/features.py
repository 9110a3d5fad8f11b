"""Feature arrays and their Gaussian statistics: the extractor interface, input checks, FeatureStats and .npz files.

Every metric in this package works on 2-D feature arrays (N, d) that a `FeatureExtractor` produced from
images in [-1, 1]. The statistics FID needs (mean `mu` and covariance `sigma`, Heusel et al. 2017) are
accumulated in row blocks in float64, so 50k x 2048 features never need a float64 copy of the whole set.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from difflab.data.atomic import atomic_write
from difflab.errors import UserError

STATS_FORMAT = "difflab-feature-stats-v1"
DEFAULT_BLOCK_ROWS = 4096  # rows cast to float64 at a time when accumulating statistics


class FeatureExtractor(Protocol):
    """Images in [-1, 1], float (N, C, H, W) -> named 2-D feature arrays, e.g. {"pool": (N, 2048), "spatial": ...}."""

    keys: tuple[str, ...]

    def extract(self, images: torch.Tensor | np.ndarray, batch_size: int = 50) -> dict[str, np.ndarray]: ...


def check_features(x: np.ndarray, name: str) -> np.ndarray:
    """A 2-D float array of finite features, else a one-line UserError naming the set `name`."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise UserError(f"{name} features must be a 2-D array (samples, dims); got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise UserError(f"{name} features contain NaN or inf in {int(bad.sum())} of {len(x)} rows; "
                        f"check the {name} images (a diverged sampler produces NaN)")
    return x


def check_same_dim(d_real: int, d_fake: int, what: str = "features") -> None:
    """Both sets must come from the same extractor layer."""
    if d_real != d_fake:
        raise UserError(f"real {what} have {d_real} dims but fake {what} have {d_fake}; "
                        "extract both sets with the same feature extractor and layer")


def check_image_sets(real_shape: tuple[int, ...], fake_shape: tuple[int, ...]) -> None:
    """Real and fake image sets (N, C, H, W) must share channel count and size to be compared."""
    real_shape, fake_shape = tuple(real_shape), tuple(fake_shape)
    if len(real_shape) != 4 or len(fake_shape) != 4:
        raise UserError(f"image sets must be (N, C, H, W) arrays; got real {real_shape} and fake {fake_shape}")
    if real_shape[1:] != fake_shape[1:]:
        r, f = "x".join(map(str, real_shape[1:])), "x".join(map(str, fake_shape[1:]))
        raise UserError(f"real images are {r} (CxHxW) but fake images are {f}; "
                        "compare image sets of the same channel count and size")


class StatsAccumulator:
    """Running mean and covariance over feature batches (shifted-data algorithm, float64)."""

    def __init__(self, dim: int):
        self.dim = dim
        self.n = 0
        self._shift: np.ndarray | None = None  # (d,) mean of the first batch, keeps the sums small
        self._s1 = np.zeros(dim, np.float64)  # sum of (x - shift)
        self._s2 = np.zeros((dim, dim), np.float64)  # sum of (x - shift)(x - shift)^T

    def update(self, batch: np.ndarray) -> None:
        """Add a (B, d) block of features."""
        batch = np.asarray(batch)
        if batch.ndim != 2 or batch.shape[1] != self.dim:
            raise UserError(f"feature batch must have shape (B, {self.dim}); got {batch.shape}")
        if len(batch) == 0:
            return
        x = batch.astype(np.float64)
        if self._shift is None:
            self._shift = x.mean(axis=0)
        x -= self._shift
        self._s1 += x.sum(axis=0)
        self._s2 += x.T @ x
        self.n += len(x)

    def finalize(self) -> FeatureStats:
        """Mean and unbiased covariance (divides by n - 1, as np.cov)."""
        if self.n < 2:
            raise UserError(f"statistics need at least 2 feature vectors; got {self.n}")
        mean_shifted = self._s1 / self.n
        sigma = (self._s2 - self.n * np.outer(mean_shifted, mean_shifted)) / (self.n - 1)
        sigma = (sigma + sigma.T) / 2  # exact symmetry; the sums are symmetric up to rounding
        return FeatureStats(mu=self._shift + mean_shifted, sigma=sigma, n=self.n)


@dataclass(frozen=True, eq=False)
class FeatureStats:
    """Gaussian summary of a feature set: mean mu (d,), covariance sigma (d, d), count n (Heusel et al. 2017)."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    features: np.ndarray | None = None  # (n, d) sample, kept for precision/recall, density/coverage and KID

    def __post_init__(self):
        d = self.mu.shape[0] if self.mu.ndim == 1 else -1
        if self.mu.ndim != 1 or self.sigma.shape != (d, d):
            raise UserError(f"feature stats need mu of shape (d,) and sigma of shape (d, d); got {self.mu.shape} and {self.sigma.shape}")
        if self.features is not None and self.features.shape != (self.n, d):
            raise UserError(f"feature stats hold {self.n} samples of {d} dims but the kept features have shape {self.features.shape}")

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    @classmethod
    def from_features(cls, features: np.ndarray, *, keep_features: bool = False, name: str = "feature",
                      block_rows: int = DEFAULT_BLOCK_ROWS) -> FeatureStats:
        """Statistics of an (N, d) array, accumulated `block_rows` rows at a time."""
        x = check_features(features, name)
        acc = StatsAccumulator(x.shape[1])
        for start in range(0, len(x), max(1, block_rows)):
            acc.update(x[start:start + block_rows])
        stats = acc.finalize()
        if keep_features:
            return cls(mu=stats.mu, sigma=stats.sigma, n=stats.n, features=x)
        return stats


def as_stats(x: np.ndarray | FeatureStats, name: str) -> FeatureStats:
    """Features or ready statistics -> statistics."""
    return x if isinstance(x, FeatureStats) else FeatureStats.from_features(x, name=name)


def as_features(x: np.ndarray | FeatureStats, name: str, metric: str) -> np.ndarray:
    """Features, or the sample a FeatureStats kept; metrics on samples (PR, KID) cannot use mean/cov alone."""
    if isinstance(x, FeatureStats):
        if x.features is None:
            raise UserError(f"{metric} needs the {name} feature sample, but the {name} statistics hold only mean and "
                            "covariance; recompute them keeping the features")
        return x.features
    return check_features(x, name)


def save_stats(path: str | Path, stats: Mapping[str, FeatureStats]) -> Path:
    """Write named statistics (e.g. {"pool": ..., "spatial": ...}) to one .npz file, atomically."""
    arrays: dict[str, np.ndarray] = {"format": np.array(STATS_FORMAT)}
    for key, st in stats.items():
        if "/" in key or not key:
            raise UserError(f"feature stats names must be non-empty and contain no '/'; got {key!r}")
        arrays[f"{key}/mu"] = np.asarray(st.mu, np.float64)
        arrays[f"{key}/sigma"] = np.asarray(st.sigma, np.float64)
        arrays[f"{key}/n"] = np.array(st.n, np.int64)
        if st.features is not None:
            arrays[f"{key}/features"] = np.asarray(st.features)
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def load_stats(path: str | Path) -> dict[str, FeatureStats]:
    """Read statistics written by `save_stats` (never unpickles: allow_pickle=False)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"feature stats file not found: {path}; create it with `difflab stats` or give an existing .npz")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot read feature stats {path} ({e}); expected an .npz written by difflab") from None
    if "format" not in data or str(data["format"]) != STATS_FORMAT:
        raise UserError(f"{path} is not a difflab feature-stats file (no format={STATS_FORMAT!r}); recreate it with `difflab stats`")
    out = {}
    for key in sorted({k.split("/")[0] for k in data if "/" in k}):
        missing = [p for p in ("mu", "sigma", "n") if f"{key}/{p}" not in data]
        if missing:
            raise UserError(f"feature stats {path} lack '{key}/{missing[0]}'; recreate the file")
        mu, sigma = data[f"{key}/mu"], data[f"{key}/sigma"]
        if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise UserError(f"feature stats '{key}' in {path} contain NaN or inf; recreate the file")
        out[key] = FeatureStats(mu=mu, sigma=sigma, n=int(data[f"{key}/n"]), features=data.get(f"{key}/features"))
    return out
