"""Sampling a trained run in batches: the work behind `difflab sample` and the evaluation of a run."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from difflab.data import save_image_grid, to_uint8_nhwc, write_npz_samples
from difflab.denoiser import Denoiser, Prediction
from difflab.errors import UserError
from difflab.samplers import SPACINGS, get_sampler, timesteps
from difflab.train.run import load_run


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


@dataclasses.dataclass
class SampleResult:
    images: Tensor  # (n, C, H, W) in [-1, 1]
    labels: Tensor | None
    sampler: str
    steps: int
    nfe: int  # network evaluations per image
    seconds: float


class CountingDenoiser:
    """Counts network evaluations (NFE) of the denoiser it wraps; per batch call."""

    def __init__(self, inner: Denoiser):
        self.inner, self.process, self.calls = inner, inner.process, 0

    def __call__(self, x: Tensor, t, y=None, s=None) -> Prediction:
        self.calls += 1
        return self.inner(x, t, y, s=s)


def generate(req: SampleRequest, progress: bool = False) -> SampleResult:
    if req.n < 1 or req.batch_size < 1:
        raise UserError("--n and --batch-size must be at least 1")
    run = load_run(req.run, ema=req.ema, device=req.device)
    cfg, m = run.cfg, run.cfg.model
    name = req.sampler or cfg.sample.sampler
    spec = get_sampler(name)
    n_steps = req.steps or cfg.sample.steps
    spacing = req.spacing or cfg.sample.spacing
    if spacing not in SPACINGS:
        raise UserError(f"unknown spacing '{spacing}'; valid: {', '.join(SPACINGS)}")
    T = run.denoiser.process.T
    if not 1 <= n_steps <= T:
        raise UserError(f"--steps must be between 1 and T={T}; got {n_steps}")
    steps = timesteps(T, n_steps, spacing)
    if req.label is not None:
        if m.num_classes is None:
            raise UserError("--class needs a class-conditional model; this run has model.num_classes=null")
        if not 0 <= req.label < m.num_classes:
            raise UserError(f"--class must be in 0..{m.num_classes - 1}; got {req.label}")
    labels = None
    if m.num_classes is not None:
        labels = torch.full((req.n,), req.label) if req.label is not None else torch.arange(req.n) % m.num_classes
    options = {}
    if name == "ddim":
        options["eta"] = cfg.sample.eta if req.eta is None else req.eta
    g = torch.Generator().manual_seed(req.seed)
    den = CountingDenoiser(run.denoiser)
    out = []
    t0 = time.perf_counter()
    for lo in tqdm(range(0, req.n, req.batch_size), desc="sample", disable=not progress, dynamic_ncols=True):
        b = min(req.batch_size, req.n - lo)
        x_T = torch.randn((b, m.in_channels, m.image_size, m.image_size), generator=g).to(req.device)
        yb = labels[lo:lo + b].to(req.device) if labels is not None else None
        out.append(spec.fn(den, x_T, steps, y=yb, generator=g, **options).cpu())
    seconds = time.perf_counter() - t0
    n_batches = -(-req.n // req.batch_size)
    return SampleResult(torch.cat(out).clamp(-1, 1), labels, name, len(steps), den.calls // n_batches, seconds)


def write_samples(path: Path, images: Tensor, labels: Tensor | None) -> None:
    """`.png`: a grid; `.npz`: uint8 NHWC as arr_0 (+ arr_1 labels), guided-diffusion's evaluator layout."""
    if path.suffix == ".npz":
        write_npz_samples(path, to_uint8_nhwc(images), None if labels is None else labels.numpy().astype(np.int64))
    else:
        save_image_grid(images, path)
