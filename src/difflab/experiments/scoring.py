"""Scoring image sets against one reference in one feature space: FID, precision, recall and KID (what seed 000 reports)."""

from __future__ import annotations

import torch

from difflab.eval.metrics import MetricsConfig, compute_metrics

METRICS = ("fid", "precision", "recall", "kid")


class Scorer:
    """Features of the reference once; metrics of any image set against it."""

    def __init__(self, features: str, ref: str, image_shape: tuple[int, int, int], *, cache_dir: str | None = None, n: int = 1000,
                 seed: int = 0, batch_size: int = 256, metrics_config: MetricsConfig = MetricsConfig(), progress: bool = False):
        """`ref`: any spec of `difflab eval --ref` (a data split, .npz, folder, stats file, or a run sampled with n, seed + 1)."""
        from difflab.eval.inputs import ImageSet, check_same_images
        from difflab.eval.sources import parse_feature_source
        from difflab.pipelines.evaluate import build_extractor, check_enough_for_fid, reference_features, resolve_reference
        from difflab.pipelines.sample import SampleRequest

        self.source = str(parse_feature_source(features))
        self.extractor = build_extractor(self.source, cache_dir=cache_dir)
        if hasattr(self.extractor, "check_shape"):
            self.extractor.check_shape((1, *image_shape), "runs' images")
        check_enough_for_fid(METRICS, self.extractor, n, "samples (--n)", fix="Raise --n")  # before any training is spent
        ref = resolve_reference(ref, SampleRequest(n=n, seed=seed + 1, batch_size=batch_size), progress=progress)
        probe = ImageSet(torch.zeros((1, *image_shape)), None, "runs", "run")
        check_same_images(probe, ref)
        self.n_ref = len(ref) if isinstance(ref, ImageSet) else ref.n
        self.real = reference_features(ref, self.extractor, 256, self.source)
        self.config, self.batch = metrics_config, 256

    def score(self, images: torch.Tensor) -> dict[str, float]:
        fake = self.extractor.extract(images, self.batch)
        return compute_metrics(self.real, fake, METRICS, config=self.config)
