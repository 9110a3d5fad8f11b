"""Run folders: create (refusing to clobber), train, and load back a trained model as a Denoiser."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from difflab.configs import from_dict, save_json, to_dict
from difflab.data import load_dataset, save_image_grid
from difflab.denoiser import ModelDenoiser
from difflab.errors import UserError
from difflab.nets import build_unet
from difflab.process import build_process
from difflab.train.checkpoint import list_checkpoints, load_checkpoint, unflatten
from difflab.train.config import RunConfig
from difflab.train.dist import DistInfo, init_distributed, local_rank_from_env, resolve_device, shutdown
from difflab.train.plots import plot_metrics
from difflab.train.task import DiffusionTask
from difflab.train.trainer import RunPaths, Trainer

RUN_FILES = ("config.json", "checkpoints", "metrics.jsonl", "samples", "plots")


def prepare_run_dir(out: Path, resume: bool, force: bool) -> None:
    """Refuse to write into a folder holding a run unless resuming it or told to replace it (--force)."""
    if resume and force:
        raise UserError("--resume and --force contradict each other: --resume continues the run, --force replaces it")
    holds_run = out.exists() and any((out / f).exists() for f in RUN_FILES)
    if resume:
        if not (out / "config.json").exists():
            raise UserError(f"--resume: {out} holds no run (no config.json); start it without --resume")
        return
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the run")
    if holds_run:
        if not force:
            raise UserError(f"{out} already holds a run: add --resume to continue it, --force to replace it, or choose another --out")
        for f in RUN_FILES:
            p = out / f
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()


@contextlib.contextmanager
def training_session(cfg, out: Path, *, resume: bool, force: bool, frozen: Sequence[str],
                     changeable: str) -> Iterator[tuple[torch.device, DistInfo]]:
    """What every training run does around its Trainer; yields (device, dist).

    Picks the device, joins torchrun's process group (a no-op for one process), checks the run folder (never
    clobbered; on --resume the `frozen` sections of `cfg` must equal the run's config.json, since only the
    `changeable` ones may differ), and leaves the process group however the run ends.
    """
    device = resolve_device(cfg.train.device, local_rank_from_env())
    dist = init_distributed(device)
    try:
        if dist.is_main:
            prepare_run_dir(out, resume, force)
        if resume:
            saved = json.loads((out / "config.json").read_text())
            for key in frozen:
                mine = getattr(cfg, key)
                mine = mine if isinstance(mine, str) else to_dict(mine)
                # A section newer than the run (e.g. `condition`) is absent from its config.json: it had the default.
                default = None if isinstance(getattr(cfg, key), str) else to_dict(type(getattr(cfg, key))())
                if saved.get(key, default) != mine:
                    raise UserError(f"--resume: the '{key}' section differs from the run's config.json; only {changeable} may change on resume")
        yield device, dist
    finally:
        shutdown(dist)


def build_model(cfg: RunConfig, num_classes: int | None = None) -> torch.nn.Module:
    """The network of a run; seeds torch's global RNG from train.seed first, so initialisation is reproducible."""
    torch.manual_seed(cfg.train.seed)
    return build_unet(cfg.model)


def check_data_fits_model(cfg: RunConfig, x: torch.Tensor, num_classes: int | None) -> None:
    m = cfg.model
    if x.shape[1] != cfg.data_channels or x.shape[-1] != m.image_size:  # data_channels: in_channels less an image condition's
        raise UserError(
            f"data are {x.shape[1]}x{x.shape[-2]}x{x.shape[-1]} but model expects {cfg.data_channels}x{m.image_size}x{m.image_size}: "
            f"set model.in_channels/out_channels/image_size, or data.image_size / data.channels"
        )
    if m.num_classes is not None and num_classes is None:
        raise UserError(f"model.num_classes is {m.num_classes} but the data have no labels: use labelled data or set model.num_classes=null")
    if m.num_classes is not None and num_classes is not None and num_classes > m.num_classes:
        raise UserError(f"the data have {num_classes} classes but model.num_classes is {m.num_classes}: set model.num_classes={num_classes}")


def train_run(cfg: RunConfig, out: Path, *, resume: bool = False, force: bool = False, progress: bool = True,
              stop_at: int | None = None, budget_seconds: float | None = None, budget_clock=None) -> Path:
    """Train a diffusion model described by `cfg` into the run folder `out`; returns `out`.

    `budget_seconds`: stop after that many seconds of `budget_clock` (default wall-clock), with a final checkpoint; see `Trainer.fit`."""
    # Training keys may change on resume (e.g. more steps); the model and the math may not.
    with training_session(cfg, out, resume=resume, force=force, frozen=("data", "model", "process", "denoiser", "loss", "condition"),
                          changeable="train.* and sample.*") as (device, dist):
        data = load_dataset(cfg.data)
        check_data_fits_model(cfg, data.x, data.num_classes)
        paths = RunPaths(out)
        if dist.is_main:
            out.mkdir(parents=True, exist_ok=True)
            save_json(cfg, out / "config.json")
        model = build_model(cfg)
        task = DiffusionTask(cfg, model, build_process(cfg.process), device)
        y = data.y if cfg.model.num_classes is not None else None
        trainer = Trainer(model, task, data.x, y, cfg.train, paths, device, dist,
                          run_meta={"config": to_dict(cfg)}, progress=progress,
                          on_grid=lambda step, images: save_image_grid(images, paths.samples / f"step-{step}.png"))
        if resume:
            trainer.resume()
        trainer.fit(stop_at=stop_at, budget_seconds=budget_seconds, clock=budget_clock)
        trainer.close()
        if dist.is_main and paths.metrics.exists():
            plot_metrics(paths.metrics, paths.plots / "loss.png")
        return out


@dataclasses.dataclass
class LoadedRun:
    cfg: RunConfig
    model: torch.nn.Module
    denoiser: ModelDenoiser
    step: int
    checkpoint: Path


def find_checkpoint(spec: Path) -> tuple[Path, Path]:
    """(run folder, checkpoint base path) for a run folder (newest checkpoint) or a checkpoint file."""
    if spec.is_dir():
        found = list_checkpoints(spec / "checkpoints")
        if not found:
            raise UserError(f"no checkpoint in {spec / 'checkpoints'}: train the run first (difflab train --out {spec})")
        return spec, found[-1]
    if spec.suffix in (".safetensors", ".json") and spec.exists():
        return spec.parent.parent, spec.with_suffix("")
    raise UserError(f"--run {spec} is neither a run folder nor a checkpoint file (step-N.safetensors)")


def load_run(spec: str | Path, *, ema: bool = True, device: str | torch.device = "cpu") -> LoadedRun:
    """Load a trained run's (EMA) weights as a Denoiser. Uses the config stored in the checkpoint."""
    run_dir, ckpt = find_checkpoint(Path(spec))
    tensors, meta = load_checkpoint(ckpt)
    cfg = from_dict(RunConfig, meta["config"])
    model = build_unet(cfg.model)
    model.load_state_dict(unflatten("ema" if ema else "model", tensors))
    model.to(device).eval()
    den = ModelDenoiser(model, build_process(cfg.process), cfg.denoiser)
    return LoadedRun(cfg=cfg, model=model, denoiser=den, step=int(meta["step"]), checkpoint=ckpt)
