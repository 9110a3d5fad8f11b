"""One entry point for all metrics: named feature sets in, a flat {name: float} dict out.

Feature sets are mappings from feature names to arrays (or FeatureStats for the real side), as a
`FeatureExtractor` returns them. Which features each metric reads:
  fid -> "pool", sfid -> "spatial", is -> fake "logits", precision/recall/density/coverage/kid -> "pool".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args


from difflab.configs import field
from difflab.errors import UserError
from difflab.eval.metrics.features import FeatureStats
from difflab.eval.metrics.frechet import fid
from difflab.eval.metrics.label_score import inception_score
from difflab.eval.metrics.kernel import kid
from difflab.eval.metrics.manifold import prdc

MetricName = Literal["fid", "sfid", "is", "precision", "recall", "density", "coverage", "kid"]
METRIC_NAMES: tuple[str, ...] = get_args(MetricName)
FEATURE_KEY = {"fid": "pool", "sfid": "spatial", "is": "logits", "precision": "pool", "recall": "pool",
               "density": "pool", "coverage": "pool", "kid": "pool"}
PRDC_NAMES = ("precision", "recall", "density", "coverage")

Features = Mapping[str, "np.ndarray | FeatureStats"]


@dataclass(frozen=True)
class MetricsConfig:
    nearest_k: int = field(3, help="k of the k-NN balls for precision/recall/density/coverage (Kynkäänniemi et al.: 3)")
    kid_subsets: int = field(100, help="KID: number of random subsets")
    kid_subset_size: int = field(1000, help="KID: samples per subset (capped at the smaller set size)")
    is_splits: int = field(10, help="Inception Score: number of splits for mean and std")
    fid_eps: float = field(1e-6, help="FID: eps*I added to both covariances when their product is near-singular")
    seed: int = field(0, help="seed of the KID subset draws")
    block_rows: int | None = field(None, help="rows per distance block for k-NN metrics (None: fit 256 MiB)")

    def __post_init__(self):
        if self.nearest_k < 1 or self.kid_subsets < 1 or self.kid_subset_size < 2 or self.is_splits < 1:
            raise UserError("metrics config needs nearest_k >= 1, kid_subsets >= 1, kid_subset_size >= 2, is_splits >= 1; "
                            f"got {self.nearest_k}, {self.kid_subsets}, {self.kid_subset_size}, {self.is_splits}")
        if not self.fid_eps > 0:
            raise UserError(f"metrics config fid_eps must be positive; got {self.fid_eps}")


def check_metric_names(metrics: Sequence[str]) -> tuple[str, ...]:
    """Validated metric names in order, without duplicates."""
    if isinstance(metrics, str):
        metrics = (metrics,)
    for name in metrics:
        if name not in METRIC_NAMES:
            raise UserError(f"unknown metric {name!r}; valid metrics: {', '.join(METRIC_NAMES)}")
    return tuple(dict.fromkeys(metrics))


def _get(features: Features, side: str, metric: str):
    key = FEATURE_KEY[metric]
    if key not in features:
        have = ", ".join(sorted(features)) or "none"
        hint = " (the FID Inception network has no classifier head; use an extractor that returns logits)" if key == "logits" else ""
        raise UserError(f"{metric} needs {side} '{key}' features but only [{have}] were given{hint}")
    return features[key]


def compute_metrics(real: Features, fake: Features, metrics: Sequence[str] = ("fid",), *,
                    config: MetricsConfig = MetricsConfig()) -> dict[str, float]:
    """Compute the named metrics; returns e.g. {"fid": .., "is": .., "is_std": .., "kid": .., "kid_std": .., "precision": ..}."""
    names = check_metric_names(metrics)
    out: dict[str, float] = {}
    for name in names:
        if name in ("fid", "sfid"):
            out[name] = fid(_get(real, "real", name), _get(fake, "fake", name), eps=config.fid_eps,
                            metric=name.upper() if name == "fid" else "sFID")
        elif name == "is":
            logits = _get(fake, "fake", name)
            if isinstance(logits, FeatureStats):
                raise UserError("is needs the fake 'logits' array, not statistics")
            out["is"], out["is_std"] = inception_score(logits, splits=config.is_splits)
        elif name == "kid":
            out["kid"], out["kid_std"] = kid(_get(real, "real", name), _get(fake, "fake", name),
                                             subsets=config.kid_subsets, subset_size=config.kid_subset_size,
                                             seed=config.seed)
    wanted = [n for n in names if n in PRDC_NAMES]
    if wanted:
        res = prdc(_get(real, "real", wanted[0]), _get(fake, "fake", wanted[0]), k=config.nearest_k,
                   block_rows=config.block_rows)._asdict()
        out.update({n: res[n] for n in wanted})
    return {n: out[n] for n in _output_order(names, out)}


def _output_order(names: tuple[str, ...], out: dict[str, float]) -> list[str]:
    """Results in the order requested, each std right after its mean."""
    order = []
    for n in names:
        order.append(n)
        if f"{n}_std" in out:
            order.append(f"{n}_std")
    return order
