"""Sampling a trained run in batches: the one request behind `difflab sample`, `Run.sample` in the Python API, the
guidance sweep, the comparison and the evaluation of a run. The CLI and the API build the same `SampleRequest`, so
they draw the same images with the same number of network evaluations.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from difflab.data import save_image_grid, to_uint8_nhwc, write_npz_samples
from difflab.denoiser import Denoiser, Prediction
from difflab.errors import UserError
from difflab.guidance import GUIDANCE_KINDS, ClassifierFreeGuidance, ClassifierGuidance, check_guidance_sampler
from difflab.runs import LoadedRun, load_run
from difflab.samplers import SamplerSpec, get_sampler, parse_timesteps, plan_steps, prior_sample, search_steps
from difflab.samplers.search import check_search
from difflab.training.dist import resolve_device

GUIDANCE_BASES = ("auto", "cond", "uncond")
SEARCHED = "searched"  # the spacing that runs search_steps on the run's own model


@dataclasses.dataclass(frozen=True)
class SampleRequest:
    """What to draw from which run. None means the run's own default (its config's sample.*)."""

    run: Path | LoadedRun | None = None  # a run folder, a step-N checkpoint, or a run already loaded
    n: int = 64  # number of images
    sampler: str | None = None
    steps: int | None = None  # sampling steps
    spacing: str | None = None
    timesteps: object = None  # explicit steps: a list, "a,b,c" or a .json file (parse_timesteps); excludes steps/spacing
    sampler_options: Mapping[str, object] | None = None  # the sampler's keyword options, validated against its schema
    batch_size: int = 256
    seed: int = 0
    classes: int | Sequence[int] | None = None  # one label for every image, one per image, or None: cycle 0..K-1
    ema: bool = True
    device: str = "auto"
    guidance: str = "none"  # "none" | "classifier" | "cfg" (difflab.guidance)
    scale: float | None = None  # s of classifier guidance / w of classifier-free guidance; None: 1.0
    classifier: Path | LoadedRun | None = None  # classifier run, for guidance "classifier"
    base: str = "auto"  # classifier guidance of the conditional ("cond") or unconditional ("uncond") prediction
    search_batch: int = 256  # spacing "searched": x_T examples the schedule is searched on (samplers/search.py)


@dataclasses.dataclass
class SampleResult:
    images: Tensor  # (n, C, H, W) in [-1, 1]
    labels: Tensor | None
    sampler: str
    steps: int
    nfe: int  # network evaluations per image (a cfg evaluation runs the network once on a batch of 2B)
    seconds: float  # the sampling loop only, not loading
    guidance: str = "none"
    scale: float = 0.0
    timesteps: list[int] = dataclasses.field(default_factory=list)  # the steps visited
    search_nfe: int | None = None  # spacing "searched": denoiser evaluations per search example spent finding them
    options: dict = dataclasses.field(default_factory=dict)  # the sampler options used
    base: str = "-"  # classifier guidance of the "cond" or "uncond" prediction; "-" without classifier guidance


class CountingDenoiser:
    """Counts evaluations (NFE) of the denoiser it wraps, per batch call, and is otherwise the same denoiser: every other
    attribute (e.g. `at_sigma`, which the adaptive solver uses when present) is the wrapped one's, counted too."""

    def __init__(self, inner: Denoiser):
        self.inner, self.process, self.calls = inner, inner.process, 0

    def __call__(self, x: Tensor, t, y=None, s=None) -> Prediction:
        self.calls += 1
        return self.inner(x, t, y, s=s)

    def __getattr__(self, name: str):
        value = getattr(self.inner, name)  # AttributeError when the wrapped denoiser lacks it: hasattr stays honest
        if name != "at_sigma":
            return value

        def counted(*args, **kwargs):
            self.calls += 1
            return value(*args, **kwargs)

        return counted


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
    if req.scale is not None and not 0 <= req.scale < float("inf"):
        raise UserError(f"--scale must be a finite number >= 0; got {req.scale}")
    check_guidance_sampler(sampler, req.guidance)


def guided_model(run: LoadedRun, guidance: str = "none", scale: float | None = None, classifier: LoadedRun | None = None,
                 base: str = "auto") -> GuidedModel:
    """Wrap run.denoiser in the requested guidance. `classifier` is a loaded classifier run."""
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


def sample_labels(n: int, num_classes: int | None, classes: int | Sequence[int] | None) -> Tensor | None:
    """Labels of n samples: all `classes` (one int), one per image (a sequence of n), or cycling 0..K-1 (None);
    None for unconditional sampling."""
    if classes is not None and num_classes is None:
        raise UserError("--class needs a class-conditional model or --guidance classifier; this run has model.num_classes=null")
    if num_classes is None:
        return None
    if classes is None:
        return torch.arange(n) % num_classes
    labels = torch.full((n,), int(classes)) if isinstance(classes, (int, np.integer)) else torch.as_tensor(list(classes), dtype=torch.long)
    if labels.shape != (n,):
        raise UserError(f"classes must be one label or one per image ({n}); got {len(labels)} labels")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if len(bad):
        raise UserError(f"--class must be in 0..{num_classes - 1}; got {int(bad[0])}")
    return labels


def draw_samples(denoiser: Denoiser, spec: SamplerSpec, steps: list[int], shape: tuple[int, ...], labels: Tensor | None, *,
                 options: dict, seed: int = 0, batch_size: int = 256, device: str | torch.device = "cpu",
                 progress: bool = False, decode=None) -> tuple[Tensor, int, float]:
    """(images (n, *shape) clamped to [-1, 1], denoiser calls per batch, seconds): x_T and sampler noise from `seed`.
    `decode` maps each sampled batch to images first (a latent run's autoencoder decoder, run.latent_decoder)."""
    n = len(labels) if labels is not None else shape[0]
    g = torch.Generator().manual_seed(seed)
    den = CountingDenoiser(denoiser)
    out = []
    t0 = time.perf_counter()
    for lo in tqdm(range(0, n, batch_size), desc="sample", disable=not progress, dynamic_ncols=True):
        b = min(batch_size, n - lo)
        x_T = prior_sample(denoiser.process, (b, *shape[1:]), g, dtype=torch.float32).to(device)
        yb = labels[lo:lo + b].to(device) if labels is not None else None
        try:
            x0 = spec.fn(den, x_T, steps, y=yb, generator=g, **options)
            out.append((x0 if decode is None else decode(x0)).cpu())
        except ValueError as e:  # a sampler's own check of its options (e.g. eta < 0): the user's value, said in one line
            raise UserError(f"sampler {spec.name}: {e}; see `difflab samplers` for its options") from None
    seconds = time.perf_counter() - t0
    return torch.cat(out).clamp(-1, 1), den.calls // -(-n // batch_size), seconds


@torch.no_grad()
def sample_generator(run: LoadedRun, n: int, generator: torch.Generator | None = None, *, batch_size: int = 256) -> Tensor:
    """n images (n, C, H, W) in [-1, 1], CPU, from a one-shot generator run (VAE: decoder mean at z ~ N(0, I); DCGAN: G(z)).

    z is drawn on the CPU from `generator`, batch by batch, so the images are a function of its seed and of
    `batch_size` only. Both networks run in eval mode (the DCGAN's batch norm uses its running statistics).
    """
    kind = run.spec
    if kind.generate is None:
        raise UserError(f"{run.path} is a {run.kind} run, which is not a one-shot generator")
    if n < 1 or batch_size < 1:
        raise UserError("--n and --batch-size must be at least 1")
    model = run.model.eval()
    dev = next(model.parameters()).device
    out = []
    for lo in range(0, n, batch_size):
        z = torch.randn((min(batch_size, n - lo), kind.latent_dim(run.cfg)), generator=generator)
        out.append(kind.generate(model, z.to(dev)).float().cpu())
    images = torch.cat(out).clamp(-1, 1)
    if not torch.isfinite(images).all():
        raise UserError(f"samples of {run.checkpoint} contain NaN or inf: the {run.kind} diverged; check the run")
    return images


def check_fits_in_memory(n: int, shape: tuple[int, ...]) -> None:
    """Refuse an --n whose images (float32, plus the written copy) would not fit in half of this machine's memory."""
    import math
    import os

    need = 2 * 4 * n * math.prod(shape)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not every platform says
        return
    if need > total / 2:
        raise UserError(f"--n {n} images of {'x'.join(map(str, shape))} need {need / 2**30:.1f} GiB in memory, more than half of this "
                        f"machine's {total / 2**30:.0f} GiB: draw fewer per command (several runs with different --seed)")


def _load(spec: Path | LoadedRun, *, kind, ema: bool, device) -> LoadedRun:
    return spec if isinstance(spec, LoadedRun) else load_run(spec, kind=kind, ema=ema, device=device)


def plan(req: SampleRequest, run: LoadedRun, spec: SamplerSpec) -> list[int] | None:
    """The timesteps to visit (None: spacing 'searched', found later on the model), checked before anything is drawn."""
    cfg, process = run.cfg, run.denoiser.process
    if req.steps is not None and not 1 <= req.steps <= process.T:  # 0 must not quietly mean "the run's default"
        raise UserError(f"--steps must be between 1 and T={process.T}; got {req.steps}")
    trained = getattr(cfg, "plan_timesteps", None)  # a distilled student (runs/student) samples only on the grids it learned
    if trained is not None:
        return trained(req.steps, req.spacing, req.timesteps)
    spacing = req.spacing or cfg.sample.spacing
    n_steps = req.steps or cfg.sample.steps
    if req.timesteps is not None:
        if req.steps is not None or req.spacing is not None:
            raise UserError("--timesteps lists the steps itself: drop --steps and --spacing")
        return parse_timesteps(req.timesteps, process.T)
    if spacing != SEARCHED:
        return plan_steps(process, n_steps, spacing)
    if req.search_batch < 1:
        raise UserError(f"--search-batch must be at least 1; got {req.search_batch}")
    check_search(process.T, spec.name, n_steps)
    return None


def generate(req: SampleRequest, progress: bool = False) -> SampleResult:
    """Draw req.n images from the run: any sampler and guidance for a diffusion run, one pass for a VAE or DCGAN."""
    if req.run is None:
        raise UserError("no run to sample: give a run folder or checkpoint (--run)")
    if req.n < 1 or req.batch_size < 1:
        raise UserError("--n and --batch-size must be at least 1")
    device = resolve_device(req.device)
    run = _load(req.run, kind=None, ema=req.ema, device=device)
    if run.spec.generate is not None:  # a VAE or DCGAN: one generator pass per image, no sampler
        if req.sampler is not None or req.steps is not None or req.guidance != "none" or req.sampler_options:
            raise UserError(f"{run.path} is a {run.kind} run: it samples in one pass, without --sampler, --steps, options or guidance")
        check_fits_in_memory(req.n, run.image_shape)
        t0 = time.perf_counter()
        images = sample_generator(run, req.n, torch.Generator().manual_seed(req.seed), batch_size=req.batch_size)
        return SampleResult(images, None, "decoder" if run.kind == "vae" else "generator", 1, 1, time.perf_counter() - t0)
    if run.spec.denoiser is None:
        raise UserError(f"{run.path} is a {run.kind} run, which makes no images; sample a diffusion, VAE or DCGAN run")
    if run.cfg.condition.kind != "none":  # its network also needs the condition y (docs/restoration.md)
        raise UserError(f"{run.path} is an image-conditional model (condition.kind '{run.cfg.condition.kind}'): "
                        f"sample it with `difflab restore --run {run.path} --data SPEC`")
    cfg, m = run.cfg, run.cfg.model
    check_fits_in_memory(req.n, run.image_shape)  # the images (a latent run's decoded ones)
    spec = get_sampler(req.sampler or cfg.sample.sampler)
    check_guidance_request(req, spec.name)
    options = {**cfg.sample.options_for(spec), **spec.parse_options(req.sampler_options)}
    steps = plan(req, run, spec)
    clf = _load(req.classifier, kind="classifier", ema=True, device=device) if req.guidance == "classifier" else None
    model = guided_model(run, req.guidance, req.scale, clf, req.base)
    labels = sample_labels(req.n, model.num_classes, req.classes)
    shape = (m.in_channels, m.image_size, m.image_size)
    search_nfe = None
    if steps is None:
        # Searched on the model that will be sampled (guidance included), from other x_T than the samples' (seed + 1).
        n_steps, found = req.steps or cfg.sample.steps, {}
        if progress:
            print(f"searching {n_steps} timesteps for {spec.name} on {req.search_batch} x_T "
                  "(a teacher solve and a few hundred few-step solves; reuse the result with --timesteps)", file=sys.stderr)
        search_labels = sample_labels(req.search_batch, model.num_classes, req.classes if not isinstance(req.classes, Sequence) else None)
        steps = search_steps(model.denoiser, n_steps, shape, sampler=spec.name, options=options,
                             y=None if search_labels is None else search_labels.to(device), batch=req.search_batch,
                             seed=req.seed + 1, device=device, callback=found.update)
        search_nfe = found.get("nfe")
    images, nfe, seconds = draw_samples(model.denoiser, spec, steps, (req.n, *shape), labels,
                                        options=options, seed=req.seed, batch_size=req.batch_size, device=device, progress=progress,
                                        decode=run.latent_decoder)
    return SampleResult(images, labels, spec.name, len(steps), nfe, seconds, model.guidance, model.scale, list(steps), search_nfe, options,
                        model.base)


def write_samples(path: Path, images: Tensor, labels: Tensor | None) -> None:
    """`.png`: a grid; `.npz`: uint8 NHWC as arr_0 (+ arr_1 labels), guided-diffusion's evaluator layout."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):  # e.g. the 4-channel latents of a DiT imported without --autoencoder
        raise UserError(f"the run makes {images.shape[1]}-channel arrays, not images: give it an autoencoder to decode them "
                        "(difflab import dit --autoencoder RUN), or take the arrays from the Python API (difflab.load_run(RUN).sample)")
    if path.suffix == ".npz":
        write_npz_samples(path, to_uint8_nhwc(images), None if labels is None else labels.numpy().astype(np.int64))
    else:
        save_image_grid(images, path)
