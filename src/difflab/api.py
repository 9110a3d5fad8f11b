"""The Python API, the twin of the CLI: `difflab.load_run`, `Run.sample`, `difflab.train`, `difflab.evaluate`.

Each call builds the same request object the matching command builds (`difflab sample` -> SampleRequest, `difflab eval`
-> EvalRequest), so the API and the CLI draw the same images with the same number of network evaluations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from difflab.pipelines.evaluate import EvalRequest
from difflab.pipelines.evaluate import evaluate as _evaluate
from difflab.pipelines.sample import SampleRequest, SampleResult, generate
from difflab.runs import LoadedRun, resolve_config, train_run
from difflab.runs import load_run as _load_run


class Run:
    """A trained run of any kind: its config, network and (diffusion) Denoiser, and `sample` as `difflab sample` does it."""

    def __init__(self, loaded: LoadedRun):
        self.loaded = loaded

    path = property(lambda self: self.loaded.path, doc="the run folder")
    kind = property(lambda self: self.loaded.kind, doc='"diffusion" | "classifier" | "vae" | "dcgan"')
    config = property(lambda self: self.loaded.cfg, doc="the run config (a frozen dataclass)")
    model = property(lambda self: self.loaded.model, doc="the network with the loaded (EMA) weights, in eval mode")
    step = property(lambda self: self.loaded.step, doc="the training step of the loaded checkpoint")
    num_classes = property(lambda self: self.loaded.num_classes, doc="classes of a class-conditional run, else None")

    @property
    def denoiser(self):
        """The Denoiser of a diffusion run, for calling samplers directly (difflab.samplers)."""
        return self.loaded.denoiser

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, kind={self.kind!r}, step={self.step})"

    def sample(self, n: int = 64, *, sampler: str | None = None, steps: int | None = None, spacing: str | None = None,
               timesteps: Sequence[int] | str | None = None, sampler_options: Mapping[str, Any] | None = None,
               guidance: str = "none", scale: float | None = None, classifier: str | Path | Run | None = None,
               base: str = "auto", classes: int | Sequence[int] | None = None, seed: int = 0, batch_size: int = 256,
               search_batch: int = 256, progress: bool = False) -> SampleResult:
        """n images from this run, exactly as `difflab sample --run RUN` draws them with the same flags.

        `classes`: one label for all images, one per image, or None to cycle 0..K-1 (a class-conditional model is never
        silently sampled with its null label). Returns a SampleResult: .images (n, C, H, W) in [-1, 1], .labels,
        .nfe (network evaluations per image), .timesteps, .seconds.
        """
        clf = classifier.loaded if isinstance(classifier, Run) else classifier
        req = SampleRequest(run=self.loaded, n=n, sampler=sampler, steps=steps, spacing=spacing, timesteps=timesteps,
                            sampler_options=sampler_options, batch_size=batch_size, seed=seed, classes=classes,
                            device=str(next(self.model.parameters()).device), guidance=guidance, scale=scale, classifier=clf,
                            base=base, search_batch=search_batch)
        return generate(req, progress=progress)


def load_run(path: str | Path, *, ema: bool = True, device: str | torch.device = "auto") -> Run:
    """A trained run folder (its newest checkpoint) or a step-N.safetensors checkpoint, of any kind."""
    return Run(_load_run(path, ema=ema, device=device))


def train(config: Any, out: str | Path, *, overrides: Sequence[str] = (), resume: bool = False, force: bool = False,
          progress: bool = True) -> Run:
    """Train a run, as `difflab train --config CONFIG --out OUT --set ...`: `config` is a preset name, a JSON file, a run
    folder or a config dataclass of any kind (difflab.runs); returns the trained run, loaded."""
    cfg = resolve_config(config, list(overrides)) if isinstance(config, (str, Path)) else config
    if not isinstance(config, (str, Path)) and overrides:
        from difflab.configs import apply_overrides

        cfg = apply_overrides(cfg, list(overrides))
    return load_run(train_run(cfg, Path(out), resume=resume, force=force, progress=progress))


def evaluate(samples: str | Path, ref: str | Path, *, features: str = "inception", metrics: Sequence[str] | str = ("fid",),
             n: int = 1000, seed: int = 0, batch_size: int = 50, cache_dir: str | Path | None = None, progress: bool = False,
             **sampling: Any) -> dict:
    """Metrics of `samples` against `ref`, as `difflab eval --samples S --ref R`: each may be a run folder (sampled now with
    `n`, `seed` and any SampleRequest field in `sampling`, e.g. sampler="ddim", steps=50), an .npz, an image folder,
    a data split such as "digits:test", or (ref only) a `difflab stats` file. Returns the JSON-able result dict."""
    from difflab.eval.metrics import MetricsConfig
    from difflab.pipelines.evaluate import parse_metrics

    cache = Path(cache_dir).expanduser() if cache_dir is not None else Path("~/.cache/difflab").expanduser()
    req = EvalRequest(samples=str(samples), ref=str(ref), features=features, metrics=parse_metrics(metrics),
                      sampling=SampleRequest(n=n, seed=seed, batch_size=batch_size, **sampling), batch_size=batch_size,
                      cache_dir=str(cache), metrics_config=MetricsConfig(seed=seed))
    return _evaluate(req, progress=progress)


__all__ = ["Run", "SampleRequest", "SampleResult", "evaluate", "load_run", "train"]
