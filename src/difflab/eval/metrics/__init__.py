"""Sample-quality metrics on feature arrays: FID/sFID, Inception Score, KID, precision/recall, density/coverage."""

from difflab.eval.metrics.compute import METRIC_NAMES, MetricsConfig, compute_metrics
from difflab.eval.metrics.features import (
    FeatureExtractor,
    FeatureStats,
    StatsAccumulator,
    check_features,
    check_image_sets,
    load_stats,
    save_stats,
)
from difflab.eval.metrics.frechet import fid, frechet_distance
from difflab.eval.metrics.label_score import inception_score, inception_score_from_probs
from difflab.eval.metrics.kernel import kid, mmd2_unbiased, polynomial_kernel
from difflab.eval.metrics.manifold import PRDC, density_coverage, knn_radii, prdc, precision_recall

__all__ = [
    "METRIC_NAMES", "MetricsConfig", "compute_metrics",
    "FeatureExtractor", "FeatureStats", "StatsAccumulator", "check_features", "check_image_sets", "load_stats", "save_stats",
    "fid", "frechet_distance",
    "inception_score", "inception_score_from_probs",
    "kid", "mmd2_unbiased", "polynomial_kernel",
    "PRDC", "density_coverage", "knn_radii", "prdc", "precision_recall",
]
