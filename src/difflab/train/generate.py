"""Sampling a trained run in batches: the work behind `difflab sample`, the guidance sweep and the evaluation of a run."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from difflab.data import save_image_grid, to_uint8_nhwc, write_npz_samples
from difflab.denoiser import Denoiser, Prediction
from difflab.errors import UserError
from difflab.guidance import GUIDANCE_KINDS, ClassifierFreeGuidance, ClassifierGuidance, check_guidance_sampler
from difflab.samplers import SamplerSpec, get_sampler, parse_timesteps, plan_steps, prior_sample, search_steps
from difflab.samplers.search import check_search
from difflab.train.run import LoadedRun, load_run

GUIDANCE_BASES = ("auto", "cond", "uncond")


@dataclasses.dataclass(frozen=True)
class SampleRequest:
    run: Path
    sampler: str | None = None  # None: the run's sample.* defaults
    steps: int | None = None
    spacing: str | None = None
    eta: float | None = None
    n: int = 64
    batch_size: int = 256
    seed: int = 0
    label: int | None = None
    ema: bool = True
    device: str = "cpu"
    guidance: str = "none"  # "none" | "classifier" | "cfg" (difflab.guidance)
    scale: float | None = None  # s of classifier guidance / w of classifier-free guidance; None: 1.0
    classifier: Path | None = None  # classifier run folder, for guidance "classifier"
    base: str = "auto"  # classifier guidance of the conditional ("cond") or unconditional ("uncond") prediction
    timesteps: object = None  # explicit steps: a list, "a,b,c" or a .json file (parse_timesteps); excludes steps/spacing
    search_batch: int = 256  # spacing "searched": x_T examples the schedule is searched on (samplers/search.py)


SEARCHED = "searched"  # the spacing that runs search_steps on the run's own model


@dataclasses.dataclass
class SampleResult:
    images: Tensor  # (n, C, H, W) in [-1, 1]
    labels: Tensor | None
    sampler: str
    steps: int
    nfe: int  # denoiser evaluations per image (a cfg evaluation runs the network once on a batch of 2B)
    seconds: float
    guidance: str = "none"
    scale: float = 0.0
    timesteps: list[int] = dataclasses.field(default_factory=list)  # the steps visited
    search_nfe: int | None = None  # spacing "searched": denoiser evaluations per search example spent finding them


class CountingDenoiser:
    """Counts network evaluations (NFE) of the denoiser it wraps; per batch call."""

    def __init__(self, inner: Denoiser):
        self.inner, self.process, self.calls = inner, inner.process, 0

    def __call__(self, x: Tensor, t, y=None, s=None) -> Prediction:
        self.calls += 1
        return self.inner(x, t, y, s=s)


@dataclasses.dataclass
class GuidedModel:
    """A run's denoiser with guidance applied, and the labels it can be asked for."""

    denoiser: Denoiser
    num_classes: int | None  # labels y range over 0..num_classes-1; None: unconditional sampling
    guidance: str
    scale: float
    base: str  # "cond" | "uncond" | "-" (no classifier guidance)


def null_label_trained(run: LoadedRun) -> bool:
    """True when the run's null label (index num_classes) was trained, i.e. label dropout was on."""
    m = run.cfg.model
    return m.num_classes is not None and m.class_dropout_null and run.cfg.train.label_dropout > 0


def check_guidance_request(req: SampleRequest, sampler: str) -> None:
    """One-line errors for flags that contradict each other, before anything is loaded."""
    if req.guidance not in GUIDANCE_KINDS:
        raise UserError(f"unknown --guidance '{req.guidance}'; valid: {', '.join(GUIDANCE_KINDS)}")
    if req.base not in GUIDANCE_BASES:
        raise UserError(f"unknown --base '{req.base}'; valid: {', '.join(GUIDANCE_BASES)}")
    if req.guidance == "none":
        if req.scale is not None:
            raise UserError("--scale needs --guidance classifier or --guidance cfg")
    if req.guidance != "classifier":
        if req.classifier is not None:
            raise UserError("--classifier is only used with --guidance classifier")
        if req.base != "auto":
            raise UserError("--base is only used with --guidance classifier")
    if req.guidance == "classifier" and req.classifier is None:
        raise UserError("--guidance classifier needs --classifier RUN, a noise-aware classifier (train one with `difflab classifier train`)")
    if req.scale is not None and req.scale < 0:
        raise UserError(f"--scale must be >= 0; got {req.scale}")
    check_guidance_sampler(sampler, req.guidance)


def guided_model(run: LoadedRun, guidance: str = "none", scale: float | None = None, classifier=None, base: str = "auto") -> GuidedModel:
    """Wrap run.denoiser in the requested guidance. `classifier` is a LoadedClassifier (train/classifier.py)."""
    m = run.cfg.model
    scale = 1.0 if scale is None else float(scale)
    if guidance == "none":
        return GuidedModel(run.denoiser, m.num_classes, "none", 0.0, "-")
    if guidance == "cfg":
        if m.num_classes is None:
            raise UserError("--guidance cfg needs a class-conditional model; this run has model.num_classes=null (use --guidance classifier)")
        if not null_label_trained(run):
            raise UserError("--guidance cfg needs a model trained with a null class (model.class_dropout_null=true and train.label_dropout > 0, "
                            "e.g. the digits-cond preset); this run has none, so its unconditional prediction is untrained")
        den = ClassifierFreeGuidance(run.denoiser, scale, null_label=m.num_classes, clip_x0=run.denoiser.clip_x0)
        return GuidedModel(den, m.num_classes, "cfg", scale, "-")
    if guidance != "classifier":
        raise UserError(f"unknown guidance '{guidance}'; valid: {', '.join(GUIDANCE_KINDS)}")
    if classifier is None:
        raise UserError("--guidance classifier needs --classifier RUN, a noise-aware classifier (train one with `difflab classifier train`)")
    c = classifier.cfg.model
    if (c.in_channels, c.image_size) != (m.in_channels, m.image_size):
        raise UserError(f"the classifier takes {c.in_channels}x{c.image_size}x{c.image_size} images, the model makes "
                        f"{m.in_channels}x{m.image_size}x{m.image_size}: train the classifier on the model's data")
    if base == "auto":
        base = "cond" if m.num_classes is not None else "uncond"
    if base == "cond":
        if m.num_classes is None:
            raise UserError("--base cond needs a class-conditional model; this run is unconditional (use --base uncond)")
        if c.num_classes != m.num_classes:
            raise UserError(f"the classifier has {c.num_classes} classes and the model {m.num_classes}: their labels must match for --base cond")
    elif m.num_classes is not None and not null_label_trained(run):
        raise UserError("--base uncond on a class-conditional model needs a trained null class (train.label_dropout > 0, e.g. digits-cond)")
    den = ClassifierGuidance(run.denoiser, classifier.classifier, scale, condition_denoiser=base == "cond")
    return GuidedModel(den, c.num_classes, "classifier", scale, base)


def sample_labels(n: int, num_classes: int | None, label: int | None) -> Tensor | None:
    """Labels of n samples: all `label`, or cycling 0..K-1; None for unconditional sampling."""
    if label is not None:
        if num_classes is None:
            raise UserError("--class needs a class-conditional model or --guidance classifier; this run has model.num_classes=null")
        if not 0 <= label < num_classes:
            raise UserError(f"--class must be in 0..{num_classes - 1}; got {label}")
    if num_classes is None:
        return None
    return torch.full((n,), label) if label is not None else torch.arange(n) % num_classes


def draw_samples(denoiser: Denoiser, spec: SamplerSpec, steps: list[int], shape: tuple[int, ...], labels: Tensor | None, *,
                 options: dict, seed: int = 0, batch_size: int = 256, device: str = "cpu", progress: bool = False) -> tuple[Tensor, int, float]:
    """(images (n, *shape) clamped to [-1, 1], denoiser calls per batch, seconds): x_T and sampler noise from `seed`."""
    n = len(labels) if labels is not None else shape[0]
    g = torch.Generator().manual_seed(seed)
    den = CountingDenoiser(denoiser)
    out = []
    t0 = time.perf_counter()
    for lo in tqdm(range(0, n, batch_size), desc="sample", disable=not progress, dynamic_ncols=True):
        b = min(batch_size, n - lo)
        x_T = prior_sample(denoiser.process, (b, *shape[1:]), g, dtype=torch.float32).to(device)
        yb = labels[lo:lo + b].to(device) if labels is not None else None
        out.append(spec.fn(den, x_T, steps, y=yb, generator=g, **options).cpu())
    seconds = time.perf_counter() - t0
    return torch.cat(out).clamp(-1, 1), den.calls // -(-n // batch_size), seconds


def generate(req: SampleRequest, progress: bool = False) -> SampleResult:
    if req.n < 1 or req.batch_size < 1:
        raise UserError("--n and --batch-size must be at least 1")
    from difflab.baselines import baseline_kind, is_baseline_run, sample_baseline

    if is_baseline_run(req.run):  # a VAE or DCGAN: one generator pass per image, no sampler
        t0 = time.perf_counter()
        images = sample_baseline(req.run, req.n, torch.Generator().manual_seed(req.seed), batch_size=req.batch_size, ema=req.ema, device=req.device)
        return SampleResult(images, None, baseline_kind(req.run), 1, 1, time.perf_counter() - t0)
    run = load_run(req.run, ema=req.ema, device=req.device)
    if run.cfg.condition.kind != "none":  # its network also needs the condition y (docs/restoration.md)
        raise UserError(f"{req.run} is an image-conditional model (condition.kind '{run.cfg.condition.kind}'): sample it with `difflab restore --run {req.run} --data SPEC`")
    cfg, m = run.cfg, run.cfg.model
    name = req.sampler or cfg.sample.sampler
    spec = get_sampler(name)
    check_guidance_request(req, name)
    process = run.denoiser.process
    spacing = req.spacing or cfg.sample.spacing
    if req.timesteps is not None:
        if req.steps is not None or req.spacing is not None:
            raise UserError("--timesteps lists the steps itself: drop --steps and --spacing")
        steps = parse_timesteps(req.timesteps, process.T)
    elif spacing != SEARCHED:
        steps = plan_steps(process, req.steps or cfg.sample.steps, spacing)
    elif req.search_batch < 1:
        raise UserError(f"--search-batch must be at least 1; got {req.search_batch}")
    else:
        check_search(process.T, name, req.steps or cfg.sample.steps)
    clf = None
    if req.guidance == "classifier":
        from difflab.train.classifier import load_classifier

        clf = load_classifier(req.classifier, device=req.device)
    model = guided_model(run, req.guidance, req.scale, clf, req.base)
    labels = sample_labels(req.n, model.num_classes, req.label)
    options = {}
    if name == "ddim":
        options["eta"] = cfg.sample.eta if req.eta is None else req.eta
    shape = (m.in_channels, m.image_size, m.image_size)
    search_nfe = None
    if req.timesteps is None and spacing == SEARCHED:
        # Searched on the model that will be sampled (guidance included), from other x_T than the samples' (seed + 1).
        found: dict = {}
        if progress:
            print(f"searching {req.steps or cfg.sample.steps} timesteps for {name} on {req.search_batch} x_T "
                  "(a teacher solve and a few hundred few-step solves; reuse the result with --timesteps)", file=sys.stderr)
        search_labels = sample_labels(req.search_batch, model.num_classes, req.label)
        steps = search_steps(model.denoiser, req.steps or cfg.sample.steps, shape, sampler=name, options=options,
                             y=None if search_labels is None else search_labels.to(req.device), batch=req.search_batch,
                             seed=req.seed + 1, device=req.device, callback=found.update)
        search_nfe = found.get("nfe")
    images, nfe, seconds = draw_samples(model.denoiser, spec, steps, (req.n, *shape), labels,
                                        options=options, seed=req.seed, batch_size=req.batch_size, device=req.device, progress=progress)
    return SampleResult(images, labels, name, len(steps), nfe, seconds, model.guidance, model.scale, list(steps), search_nfe)


def write_samples(path: Path, images: Tensor, labels: Tensor | None) -> None:
    """`.png`: a grid; `.npz`: uint8 NHWC as arr_0 (+ arr_1 labels), guided-diffusion's evaluator layout."""
    if path.suffix == ".npz":
        write_npz_samples(path, to_uint8_nhwc(images), None if labels is None else labels.numpy().astype(np.int64))
    else:
        save_image_grid(images, path)
