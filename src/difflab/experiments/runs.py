"""Any trained run (diffusion, VAE, DCGAN) as an image generator with a clock: what the comparison samples from.

`open_run(path)` asks the run's kind (difflab.runs.run_kind) and returns a `GeneratorRun` whose `sample(n, ...)`
draws n images in [-1, 1] and reports the seconds spent in the sampling loop only (not loading), so images/s
compare the models' samplers, not their start-up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from difflab.errors import UserError
from difflab.pipelines.sample import SampleRequest, generate
from difflab.runs import DIFFUSION_KINDS, get_kind, run_kind
from difflab.training.checkpoint import list_checkpoints
from difflab.training.plots import read_metrics

KIND_LABELS = {"diffusion": "Diffusion", "dit": "DiT", "dcgan": "DCGAN", "vae": "VAE"}


@dataclass
class Samples:
    images: Tensor  # (n, C, H, W) in [-1, 1]
    seconds: float  # the sampling loop only
    sampler: str  # "ddim", "ddpm", ... for diffusion; "decoder" (VAE) / "generator" (DCGAN)
    steps: int  # sampler steps (1 for the one-shot baselines)
    nfe: int  # network evaluations per image

    @property
    def images_per_second(self) -> float:
        return len(self.images) / max(self.seconds, 1e-9)


@dataclass
class GeneratorRun:
    path: Path
    kind: str  # "diffusion" | "dit" | "vae" | "dcgan"
    config: dict  # the run's config.json

    @property
    def label(self) -> str:
        return KIND_LABELS[self.kind]

    @property
    def diffusion(self) -> bool:
        """A diffusion model (sampled step by step through a Denoiser), whatever its network; else a one-shot generator."""
        return self.kind in DIFFUSION_KINDS

    @property
    def conditional(self) -> bool:
        return self.diffusion and self.config.get("model", {}).get("num_classes") is not None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        from difflab.runs import resolve_config

        return get_kind(self.kind).image_shape(resolve_config(self.path))

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def default_steps(self) -> int:
        return int(self.config.get("sample", {}).get("steps", 1)) if self.diffusion else 1

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints (step-N.safetensors), oldest first."""
        return [p.with_suffix(".safetensors") for p in list_checkpoints(self.path / "checkpoints")]

    def sample(self, n: int, *, seed: int = 0, batch_size: int = 256, sampler: str | None = None, steps: int | None = None,
               device: str = "auto", progress: bool = False, checkpoint: Path | None = None) -> Samples:
        """n images from the run's EMA weights (newest checkpoint, or `checkpoint`), as `difflab sample` draws them;
        diffusion with `sampler`/`steps` (default: the run's sample.*)."""
        res = generate(SampleRequest(run=self.path if checkpoint is None else checkpoint, sampler=sampler, steps=steps, n=n,
                                     batch_size=batch_size, seed=seed, device=device), progress=progress)
        if not torch.isfinite(res.images).all():
            raise UserError(f"samples of {self.path} contain NaN or inf: the model diverged; check the run")
        return Samples(res.images, res.seconds, res.sampler, res.steps, res.nfe)


def open_run(spec: str | Path) -> GeneratorRun:
    """A trained run folder of a kind that makes images; one-line errors for a missing folder, a folder without a run
    or no checkpoint."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"run {spec} does not exist: give a run folder written by `difflab train`")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise UserError(f"{spec} is not a run folder (no config.json): give a folder written by `difflab train`")
    try:
        config = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError:
        raise UserError(f"{path / 'config.json'} is not valid JSON; the run folder is damaged") from None
    if not list_checkpoints(path / "checkpoints"):
        raise UserError(f"run {spec} has no checkpoint yet: train it first (difflab train --out {spec})")
    kind = run_kind(path)
    if kind not in KIND_LABELS:
        raise UserError(f"run {spec} has kind {kind!r}, which cannot be sampled; compare diffusion, vae and dcgan runs")
    return GeneratorRun(path, kind, config)


def training_curve(metrics: Path) -> list[dict]:
    """metrics.jsonl rows, each with "time_s": training seconds up to that row (from the logged it/s)."""
    if not metrics.is_file():
        return []
    rows = read_metrics(metrics)
    elapsed, prev = 0.0, 0
    for r in rows:
        its = r.get("it_per_s")
        if its:
            elapsed += (r["step"] - prev) / its
        prev = r["step"]
        r["time_s"] = elapsed
    return rows
