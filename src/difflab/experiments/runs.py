"""Any trained run (diffusion, VAE, DCGAN) as an image generator with a clock: what the comparison samples from.

`open_run(path)` reads the run's kind from its config.json and returns a `GeneratorRun` whose `sample(n, ...)`
draws n images in [-1, 1] and reports the seconds spent in the sampling loop only (not loading), so images/s
compare the models' samplers, not their start-up.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from difflab.errors import UserError

KIND_LABELS = {"diffusion": "Diffusion", "dcgan": "DCGAN", "vae": "VAE"}


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
    kind: str  # "diffusion" | "vae" | "dcgan"
    config: dict  # the run's config.json

    @property
    def label(self) -> str:
        return KIND_LABELS[self.kind]

    @property
    def conditional(self) -> bool:
        return self.kind == "diffusion" and self.config.get("model", {}).get("num_classes") is not None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        m = self.config["model"]
        c = m.get("in_channels", 1)
        return (c, m["image_size"], m["image_size"])

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def default_steps(self) -> int:
        return int(self.config.get("sample", {}).get("steps", 1)) if self.kind == "diffusion" else 1

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints (step-N.safetensors), oldest first."""
        from difflab.train.checkpoint import list_checkpoints

        return [p.with_suffix(".safetensors") for p in list_checkpoints(self.path / "checkpoints")]

    def sample(self, n: int, *, seed: int = 0, batch_size: int = 256, sampler: str | None = None, steps: int | None = None,
               device: str = "cpu", progress: bool = False, checkpoint: Path | None = None) -> Samples:
        """n images from the run's EMA weights (newest checkpoint, or `checkpoint`); diffusion with `sampler`/`steps`
        (default: the run's sample.*)."""
        source = self.path if checkpoint is None else checkpoint
        if self.kind == "diffusion":
            from difflab.train.generate import SampleRequest, generate

            res = generate(SampleRequest(run=source, sampler=sampler, steps=steps, n=n, batch_size=batch_size, seed=seed, device=device),
                           progress=progress)
            images, seconds, name, n_steps, nfe = res.images, res.seconds, res.sampler, res.steps, res.nfe
        else:
            from difflab.baselines import load_baseline, sample_baseline

            loaded = load_baseline(source, device=device)
            t0 = time.perf_counter()
            images = sample_baseline(loaded, n, torch.Generator().manual_seed(seed), batch_size=batch_size)
            seconds = time.perf_counter() - t0
            name, n_steps, nfe = ("decoder" if self.kind == "vae" else "generator"), 1, 1
        if not torch.isfinite(images).all():
            raise UserError(f"samples of {self.path} contain NaN or inf: the model diverged; check the run")
        return Samples(images, seconds, name, n_steps, nfe)


def open_run(spec: str | Path) -> GeneratorRun:
    """A trained run folder of any kind; one-line errors for a missing folder, a folder without a run or no checkpoint."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"run {spec} does not exist: give a run folder written by `difflab train`")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise UserError(f"{spec} is not a run folder (no config.json): give a folder written by `difflab train`")
    try:
        config = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError:
        raise UserError(f"{path / 'config.json'} is not valid JSON; the run folder is damaged") from None
    from difflab.train.checkpoint import list_checkpoints

    if not list_checkpoints(path / "checkpoints"):
        raise UserError(f"run {spec} has no checkpoint yet: train it first (difflab train --out {spec})")
    kind = config.get("kind", "diffusion")
    if kind not in KIND_LABELS:
        raise UserError(f"run {spec} has kind {kind!r}, which cannot be sampled; compare diffusion, vae and dcgan runs")
    return GeneratorRun(path, kind, config)


def training_curve(metrics: Path) -> list[dict]:
    """metrics.jsonl rows, each with "time_s": training seconds up to that row (from the logged it/s)."""
    if not metrics.is_file():
        return []
    rows = [json.loads(ln) for ln in metrics.read_text().splitlines() if ln.strip()]
    elapsed, prev = 0.0, 0
    for r in rows:
        its = r.get("it_per_s")
        if its:
            elapsed += (r["step"] - prev) / its
        prev = r["step"]
        r["time_s"] = elapsed
    return rows
