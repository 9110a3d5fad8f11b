"""`evaluate`: samples and a reference -> features -> metrics, as one JSON-able dict.

What `--samples` and `--ref` may name, in this order of precedence:
  - a run folder (holds config.json or checkpoints/) or a step-N.safetensors checkpoint: sampled now with the
    evaluation's `SampleRequest` (the same request as `difflab sample`);
  - a reference statistics file written by `difflab stats` (.npz with format=difflab-feature-stats-v1);
  - an .npz of images, an image folder or a data set, optionally with a split (eval/inputs.py `load_images`).


The work behind `difflab eval`, `difflab stats` and the demo's evaluation. Metric names on the command
line: fid, sfid, is, kid, pr (= precision + recall), dc (= density + coverage), or any single name of
METRIC_NAMES. Which features each metric needs is checked before anything is sampled or extracted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from difflab.configs import to_dict
from difflab.errors import UserError
from difflab.eval.inception import InceptionConfig
from difflab.eval.inputs import ImageSet, StatsRef, check_same_images, is_stats_file, load_images, read_reference_stats
from difflab.eval.metrics import METRIC_NAMES, FeatureStats, MetricsConfig, compute_metrics
from difflab.eval.metrics.compute import FEATURE_KEY
from difflab.eval.sources import build_extractor as _build_extractor
from difflab.eval.sources import parse_feature_source, source_keys
from difflab.pipelines.sample import SampleRequest, generate
from difflab.runs import is_run, load_run

METRIC_GROUPS = {"pr": ("precision", "recall"), "dc": ("density", "coverage")}
CLI_METRICS = ("fid", "sfid", "is", "pr", "dc", "kid")
KEEP_FEATURES = ("pool",)  # stats files keep the pool sample (for PR, DC, KID); mean/cov suffice for the rest


def parse_metrics(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """'fid,pr,kid' -> ('fid', 'precision', 'recall', 'kid'); an unknown name lists the valid ones."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for raw in items:
        name = raw.strip().lower()
        if not name:
            continue
        if name in METRIC_GROUPS:
            out.extend(METRIC_GROUPS[name])
        elif name in METRIC_NAMES:
            out.append(name)
        else:
            raise UserError(f"unknown metric {raw.strip()!r}; valid metrics: {', '.join(CLI_METRICS)} "
                            f"(pr = precision + recall, dc = density + coverage; also {', '.join(n for n in METRIC_NAMES if n not in CLI_METRICS)})")
    if not out:
        raise UserError(f"no metric given; valid metrics: {', '.join(CLI_METRICS)}")
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class EvalRequest:
    samples: str
    ref: str
    features: str = "inception"
    metrics: tuple[str, ...] = ("fid",)
    sampling: SampleRequest = SampleRequest(n=1000)  # for run folders (its `run` is set per spec); a run given as --ref uses seed + 1
    batch_size: int = 50  # images per feature-network batch
    cache_dir: str | None = None  # trained feature networks (digits); the CLI's default is ~/.cache/difflab
    metrics_config: MetricsConfig = MetricsConfig()
    inception: InceptionConfig = InceptionConfig()  # weights path and resize convention of the 'inception' source


def build_extractor(spec: str, *, cache_dir: str | Path | None = None, inception: InceptionConfig = InceptionConfig()):
    """The feature extractor named by a `--features` string; 'classifier:RUN' loads that classifier run first."""
    source = parse_feature_source(spec)
    loaded = load_run(source.arg, kind="classifier") if source.kind == "classifier" else None
    return _build_extractor(source, cache_dir=cache_dir, inception=inception, classifier=loaded)


def sample_run(path: Path, opts: SampleRequest, progress: bool = False) -> ImageSet:
    """Draw opts.n images from a trained run (its EMA weights), as `difflab sample` would with the same options."""
    run = load_run(path, ema=opts.ema, device=opts.device)  # loaded here to know its step: which checkpoint was scored
    res = generate(dataclasses.replace(opts, run=run), progress=progress)
    if not torch.isfinite(res.images).all():
        raise UserError(f"samples of {path} contain NaN or inf: the model or sampler diverged; check the run and sampler")
    info = {"sampler": res.sampler, "steps": res.steps, "nfe": res.nfe, "seconds": round(res.seconds, 3),
            "seed": opts.seed, "n": opts.n, "timesteps": res.timesteps, "options": res.options, "step": run.step}
    if res.guidance != "none":
        info.update(guidance=res.guidance, scale=res.scale)
    if res.search_nfe is not None:
        info["search_nfe"] = res.search_nfe
    return ImageSet(res.images, res.labels, str(path), "run", info)


def resolve_images(spec: str, opts: SampleRequest, *, role: str = "samples", progress: bool = False) -> ImageSet:
    """Images for --samples (or --ref when it is not a stats file)."""
    path = Path(spec).expanduser()
    if is_run(path):
        return sample_run(path, opts, progress)
    if is_stats_file(path):
        raise UserError(f"--{role} {spec} is a feature-statistics file; only --ref may be one (the samples must be images)")
    return load_images(spec, role)


def resolve_reference(spec: str, opts: SampleRequest, progress: bool = False) -> ImageSet | StatsRef:
    """--ref: images (as resolve_images) or a stats file from `difflab stats`."""
    path = Path(spec).expanduser()
    if is_stats_file(path):
        return read_reference_stats(path)
    return resolve_images(spec, opts, role="ref", progress=progress)


def check_metrics_supported(metrics: tuple[str, ...], source: str, keys: tuple[str, ...]) -> None:
    """Every metric's feature key must be one of the keys the feature source gives."""
    for m in metrics:
        key = FEATURE_KEY[m]
        if key not in keys:
            hint = {"logits": "; the shipped FID Inception has no classifier head, so IS needs --features digits or classifier:RUN",
                    "spatial": "; sFID is defined on Inception's mixed_6 features: use --features inception"}.get(key, "")
            raise UserError(f"metric {m} needs '{key}' features, which the {source} feature source does not give "
                            f"(it gives {', '.join(keys)}){hint}")


def check_enough_for_fid(metrics: tuple[str, ...], extractor, n: int, what: str, fix: str | None = None) -> None:
    """FID/sFID need more samples than feature dimensions (a full-rank covariance); say how many."""
    for m in ("fid", "sfid"):
        if m in metrics:
            d = extractor.dims[FEATURE_KEY[m]]
            if n <= d:
                raise UserError(f"{m} on {extractor.name} features ({d}-d) needs at least {d + 1} {what}; got {n}. "
                                + (fix or f"Use more {what} or drop {m} from --metrics"))


def _class_summary(logits: np.ndarray, labels, num_classes: int) -> dict:
    """Predicted class histogram of the samples and, when they carry labels, the accuracy of those predictions."""
    pred = logits.argmax(axis=1)
    out = {"class_histogram": np.bincount(pred, minlength=num_classes).astype(int).tolist()}
    if labels is not None:
        y = labels.cpu().numpy() if hasattr(labels, "cpu") else np.asarray(labels)
        out["class_accuracy"] = float((pred == y).mean())
    return out


def reference_features(ref: ImageSet | StatsRef, extractor, batch_size: int, expected: str) -> dict:
    """Feature arrays of a reference image set, or the statistics of a stats file (checked against the extractor)."""
    if isinstance(ref, ImageSet):
        return extractor.extract(ref.x, batch_size)
    made_with = ref.meta.get("features")
    if made_with is not None and made_with != expected:
        raise UserError(f"reference stats {ref.source} were made with --features {made_with}, not {expected}; "
                        f"use matching features or recreate them with `difflab stats --features {expected}`")
    resize, ours = ref.meta.get("feature_info", {}).get("resize"), getattr(extractor, "info", {}).get("resize")
    if resize is not None and ours is not None and resize != ours:
        raise UserError(f"reference stats {ref.source} were made with --resize {resize}, not {ours}; "
                        "the resize convention changes the features: use the same one for both sets")
    return dict(ref.stats)


def evaluate(req: EvalRequest, progress: bool = False) -> dict:
    """Metrics of req.samples against req.ref on req.features; returns a flat JSON-able dict (see docs/evaluation.md)."""
    metrics = parse_metrics(req.metrics)
    if req.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1; got {req.batch_size}")
    source = str(parse_feature_source(req.features))
    if source_keys(source) is not None:  # before loading a network
        check_metrics_supported(metrics, source, source_keys(source))
    extractor = build_extractor(source, cache_dir=req.cache_dir, inception=req.inception)
    check_metrics_supported(metrics, source, extractor.keys)
    if is_run(Path(req.samples).expanduser()):
        check_enough_for_fid(metrics, extractor, req.sampling.n, "samples (--n)")
    fake = resolve_images(req.samples, req.sampling, progress=progress)
    if hasattr(extractor, "check_shape"):
        extractor.check_shape(tuple(fake.x.shape), "samples")
    check_enough_for_fid(metrics, extractor, len(fake), "samples")
    ref = resolve_reference(req.ref, dataclasses.replace(req.sampling, seed=req.sampling.seed + 1), progress=progress)
    check_same_images(fake, ref)
    if isinstance(ref, ImageSet):
        check_enough_for_fid(metrics, extractor, len(ref), "reference images")
    fake_feats = extractor.extract(fake.x, req.batch_size)
    real_feats = reference_features(ref, extractor, req.batch_size, source)
    values = compute_metrics(real_feats, fake_feats, metrics, config=req.metrics_config)
    result: dict = dict(values)
    result.update({"n_samples": len(fake), "n_ref": len(ref) if isinstance(ref, ImageSet) else ref.n,
                   "features": source, "samples": req.samples, "ref": req.ref,
                   "image_shape": list(fake.image_shape), "feature_info": dict(getattr(extractor, "info", {}))})
    result["feature_info"].pop("cached", None)
    if "logits" in fake_feats:
        result.update(_class_summary(fake_feats["logits"], fake.y, extractor.dims["logits"]))
    if fake.kind == "run":
        result["sampling"] = fake.info
    if isinstance(ref, ImageSet) and ref.kind == "run":
        result["ref_sampling"] = ref.info
    result["metrics_config"] = to_dict(req.metrics_config)
    return result


def reference_stats(spec: str, features: str, *, sampling: SampleRequest = SampleRequest(n=1000), batch_size: int = 50,
                    cache_dir: str | None = None, inception: InceptionConfig = InceptionConfig(),
                    progress: bool = False) -> tuple[dict[str, FeatureStats], dict]:
    """(stats per feature key, metadata) of an image set: mean and covariance; the pool sample is kept for PR/DC/KID."""
    source = str(parse_feature_source(features))
    extractor = build_extractor(source, cache_dir=cache_dir, inception=inception)
    images = resolve_images(spec, sampling, role="data", progress=progress)
    if hasattr(extractor, "check_shape"):
        extractor.check_shape(tuple(images.x.shape), "images")
    feats = extractor.extract(images.x, batch_size)
    stats = {k: FeatureStats.from_features(v, keep_features=k in KEEP_FEATURES, name=f"{spec} {k}")
             for k, v in feats.items() if k != "logits"}
    meta = {"features": source, "data": spec, "image_shape": list(images.image_shape), "n_images": len(images),
            "feature_info": {k: v for k, v in getattr(extractor, "info", {}).items() if k != "cached"}}
    return stats, meta
