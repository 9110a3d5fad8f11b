"""Baseline run folders: train a VAE or a DCGAN through the shared Trainer, load it back, sample from it.

A baseline run folder has the layout of a diffusion run (config.json with a top-level "kind", checkpoints/,
metrics.jsonl, samples/, plots/); a VAE run adds elbo.json (the held-out ELBO, written when training ends).
Every checkpoint's JSON carries "kind", so a baseline is never loaded as a diffusion model or the reverse.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from difflab.baselines.config import BASELINE_KINDS, CONFIG_CLASSES, BaselineRunConfig, VAERunConfig
from difflab.baselines.gan import GANTask
from difflab.baselines.vae import VAETask, evaluate_elbo
from difflab.configs import from_dict, save_json, to_dict
from difflab.data import load_dataset, save_image_grid
from difflab.errors import UserError
from difflab.nets.dcgan import DCGAN
from difflab.nets.vae import VAE
from difflab.train.checkpoint import load_checkpoint, unflatten
from difflab.train.plots import plot_metrics
from difflab.train.run import find_checkpoint, training_session
from difflab.train.trainer import RunPaths, Trainer

PLOT_KEYS = {"vae": ("loss", "rec", "kl", "decoder_std"), "dcgan": ("loss_d", "loss_g", "d_real", "d_fake")}


def build_baseline_model(cfg: BaselineRunConfig) -> nn.Module:
    """The network of a baseline run (VAE, or DCGAN holding generator and discriminator)."""
    return VAE(cfg.model) if cfg.kind == "vae" else DCGAN(cfg.model)


def build_baseline_task(cfg: BaselineRunConfig):
    if cfg.kind == "vae":
        return VAETask(cfg.model, cfg.sample.grid_size)
    return GANTask(cfg.model, cfg.sample.grid_size)


def _check_data(cfg: BaselineRunConfig, x: Tensor) -> None:
    m = cfg.model
    if x.shape[1] != m.in_channels or x.shape[-1] != m.image_size or x.shape[-2] != m.image_size:
        raise UserError(f"data are {x.shape[1]}x{x.shape[-2]}x{x.shape[-1]} but the {cfg.kind} expects "
                        f"{m.in_channels}x{m.image_size}x{m.image_size}: set model.in_channels / model.image_size, or data.image_size / data.channels")


def train_baseline_run(cfg: BaselineRunConfig, out: Path, *, resume: bool = False, force: bool = False, progress: bool = True,
                       stop_at: int | None = None, budget_seconds: float | None = None, budget_clock=None) -> Path:
    """Train the VAE or DCGAN `cfg` into the run folder `out` (the Trainer's checkpoints, resume, EMA, DDP); returns `out`.

    `budget_seconds` stops training after that many seconds of `budget_clock` (default wall-clock; `time.process_time` for
    CPU time) with a final checkpoint, for equal-budget comparisons.
    """
    if cfg.kind not in BASELINE_KINDS:
        raise UserError(f"unknown baseline kind {cfg.kind!r}; valid: {', '.join(BASELINE_KINDS)}")
    with training_session(cfg, out, resume=resume, force=force, frozen=("kind", "data", "model"),
                          changeable="train.*, sample.* and eval.*") as (device, dist):
        data = load_dataset(dataclasses.replace(cfg.data, labels="ignore"))
        _check_data(cfg, data.x)
        paths = RunPaths(out)
        if dist.is_main:
            out.mkdir(parents=True, exist_ok=True)
            save_json(cfg, out / "config.json")
        torch.manual_seed(cfg.train.seed)
        model = build_baseline_model(cfg)
        trainer = Trainer(model, build_baseline_task(cfg), data.x, None, cfg.train, paths, device, dist,
                          run_meta={"config": to_dict(cfg), "kind": cfg.kind}, progress=progress,
                          on_grid=lambda step, images: save_image_grid(images, paths.samples / f"step-{step}.png"))
        if resume:
            trainer.resume()
        trainer.fit(stop_at=stop_at, budget_seconds=budget_seconds, clock=budget_clock)
        trainer.close()
        if dist.is_main:
            if paths.metrics.exists():
                plot_metrics(paths.metrics, paths.plots / "loss.png", keys=PLOT_KEYS[cfg.kind])
            if cfg.kind == "vae" and (trainer.step == cfg.train.steps or trainer.stopped_by_budget):
                report_elbo(cfg, trainer.ema.shadow, out, trainer.step)
        return out


def report_elbo(cfg: VAERunConfig, model: VAE, out: Path, step: int) -> dict:
    """The (EMA) VAE's ELBO on cfg.eval.split, on the CPU, written to `out`/elbo.json and returned."""
    held = load_dataset(dataclasses.replace(cfg.data, split=cfg.eval.split, labels="ignore"))
    model = model.to("cpu").eval()
    res = evaluate_elbo(model, held.x, repeats=cfg.eval.repeats, generator=torch.Generator().manual_seed(cfg.eval.seed))
    res = {"split": cfg.eval.split, "step": step, **res}
    (out / "elbo.json").write_text(json.dumps(res, indent=2) + "\n")
    return res


@dataclass
class LoadedBaseline:
    cfg: BaselineRunConfig
    kind: str  # "vae" | "dcgan"
    model: nn.Module  # VAE or DCGAN, in eval mode
    step: int
    checkpoint: Path

    @property
    def latent_dim(self) -> int:
        return self.cfg.model.latent_dim

    @property
    def image_shape(self) -> tuple[int, int, int]:
        m = self.cfg.model
        return (m.in_channels, m.image_size, m.image_size)


def _checkpoint_kind(meta: dict) -> str | None:
    kind = meta.get("kind")
    if kind is None and isinstance(meta.get("config"), dict):
        kind = meta["config"].get("kind")
    return kind


def is_baseline_run(spec: str | Path) -> bool:
    """True when `spec` is a run folder or checkpoint of a VAE or DCGAN (its config.json / checkpoint JSON says so)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        cfg = path / "config.json"
        if cfg.is_file():
            try:
                return json.loads(cfg.read_text()).get("kind") in BASELINE_KINDS
            except (OSError, json.JSONDecodeError, AttributeError):
                return False
        return False
    if path.suffix in (".safetensors", ".json") and path.with_suffix(".json").is_file():
        try:
            return _checkpoint_kind(json.loads(path.with_suffix(".json").read_text())) in BASELINE_KINDS
        except (OSError, json.JSONDecodeError, AttributeError):
            return False
    return False


def baseline_kind(spec: str | Path) -> str | None:
    """'vae' / 'dcgan' for a baseline run folder or checkpoint, else None."""
    if not is_baseline_run(spec):
        return None
    path = Path(spec).expanduser()
    meta_path = path / "config.json" if path.is_dir() else path.with_suffix(".json")
    return _checkpoint_kind(json.loads(meta_path.read_text()))


def load_baseline(spec: str | Path, *, ema: bool = True, device: str | torch.device = "cpu") -> LoadedBaseline:
    """Load a VAE or DCGAN run (folder: newest checkpoint; or a step-N checkpoint) with its (EMA) weights, in eval mode."""
    run_dir, ckpt = find_checkpoint(Path(spec).expanduser())
    tensors, meta = load_checkpoint(ckpt)
    kind = _checkpoint_kind(meta)
    if kind not in BASELINE_KINDS:
        raise UserError(f"{spec} is not a VAE or DCGAN run (kind {kind!r}); train one with `difflab train --config digits-vae` or digits-dcgan")
    cfg = from_dict(CONFIG_CLASSES[kind], meta["config"])
    model = build_baseline_model(cfg)
    model.load_state_dict(unflatten("ema" if ema else "model", tensors))
    model.to(device).eval()
    return LoadedBaseline(cfg, kind, model, int(meta["step"]), ckpt)


@torch.no_grad()
def sample_baseline(run: str | Path | LoadedBaseline, n: int, generator: torch.Generator | None = None, *, batch_size: int = 256,
                    ema: bool = True, device: str | torch.device = "cpu") -> Tensor:
    """n images (n, C, H, W) in [-1, 1], CPU, from a VAE (decoder mean at z ~ N(0, I)) or DCGAN (G(z)) run.

    z is drawn on the CPU from `generator`, batch by batch, so the images are a function of its seed and of
    `batch_size` only. Both networks run in eval mode (the DCGAN's batch norm uses its running statistics).
    """
    if n < 1 or batch_size < 1:
        raise UserError("--n and --batch-size must be at least 1")
    loaded = run if isinstance(run, LoadedBaseline) else load_baseline(run, ema=ema, device=device)
    model = loaded.model.eval()
    dev = next(model.parameters()).device
    out = []
    for lo in range(0, n, batch_size):
        z = torch.randn((min(batch_size, n - lo), loaded.latent_dim), generator=generator)
        out.append(model.sample(z.to(dev)).float().cpu())
    images = torch.cat(out).clamp(-1, 1)
    if not torch.isfinite(images).all():
        raise UserError(f"samples of {loaded.checkpoint} contain NaN or inf: the {loaded.kind} diverged; check the run")
    return images
