"""Evaluation: feature extractors (the FID Inception) and sample-quality metrics on feature arrays."""

from difflab.eval.inception import InceptionConfig, InceptionV3, find_inception_weights
from difflab.eval.metrics import (
    METRIC_NAMES,
    PRDC,
    FeatureExtractor,
    FeatureStats,
    MetricsConfig,
    StatsAccumulator,
    check_features,
    check_image_sets,
    compute_metrics,
    density_coverage,
    fid,
    frechet_distance,
    inception_score,
    inception_score_from_probs,
    kid,
    knn_radii,
    load_stats,
    mmd2_unbiased,
    polynomial_kernel,
    prdc,
    precision_recall,
    save_stats,
)

__all__ = [
    "InceptionConfig", "InceptionV3", "find_inception_weights",
    "METRIC_NAMES", "PRDC", "FeatureExtractor", "FeatureStats", "MetricsConfig", "StatsAccumulator", "check_features",
    "check_image_sets", "compute_metrics", "density_coverage", "fid", "frechet_distance", "inception_score",
    "inception_score_from_probs", "kid", "knn_radii", "load_stats", "mmd2_unbiased", "polynomial_kernel", "prdc",
    "precision_recall", "save_stats",
]
