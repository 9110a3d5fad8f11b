"""Training a run of any kind into its folder, and loading a trained run back: the one `train_run` and `load_run`."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from difflab.configs import from_dict, to_dict
from difflab.data import load_dataset, save_image_grid
from difflab.data.atomic import atomic_write_text
from difflab.errors import UserError
from difflab.runs.folder import DEFAULT_KIND, find_checkpoint, keep_or_restore, kind_in, prepare_run_dir
from difflab.runs.kind import RunKind
from difflab.runs.registry import get_kind, kind_of_config
from difflab.training.checkpoint import list_checkpoints, load_checkpoint, unflatten
from difflab.training.dist import DistInfo, init_distributed, local_rank_from_env, resolve_device, shutdown
from difflab.training.plots import plot_metrics
from difflab.training.faults import sweep_partial_files
from difflab.training.trainer import RunPaths, Trainer


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
    backup = None
    try:
        if dist.is_main:
            backup = prepare_run_dir(out, resume, force)
        if resume:
            saved = json.loads((out / "config.json").read_text())
            defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
            for key in frozen:
                mine = getattr(cfg, key)
                mine = mine if isinstance(mine, str) else to_dict(mine)
                # A key newer than the run (e.g. `condition`, `kind`) is absent from its config.json: it had the default.
                default = defaults[key] if isinstance(getattr(cfg, key), str) else to_dict(type(getattr(cfg, key))())
                if saved.get(key, default) != mine:
                    raise UserError(f"--resume: the '{key}' section differs from the run's config.json; only {changeable} may change on resume")
        yield device, dist
    except BaseException:
        if dist.is_main:
            keep_or_restore(out, backup, failed=True)  # --force: the old run comes back unless the new one has a checkpoint
        raise
    else:
        if dist.is_main:
            keep_or_restore(out, backup, failed=False)
    finally:
        shutdown(dist)


def init_model(kind: RunKind, cfg) -> nn.Module:
    """The kind's network, initialised from torch's global RNG seeded with train.seed, so initialisation is reproducible."""
    torch.manual_seed(cfg.train.seed)
    return kind.build_model(cfg)


def train_run(cfg, out: str | Path, *, resume: bool = False, force: bool = False, progress: bool = True,
              stop_at: int | None = None, budget_seconds: float | None = None, budget_clock=None,
              from_step: int | None = None) -> Path:
    """Train the run `cfg` (a config of any kind) into the run folder `out`; returns `out`.

    `stop_at` pauses after that step (a later --resume continues); `budget_seconds` stops after that many seconds of
    `budget_clock` (default wall-clock) with a final checkpoint (`Trainer.fit`). `from_step` (with `resume`) continues
    from that checkpoint instead of the newest. When training has finished, the
    kind writes its reports (a classifier's accuracy vs t, a VAE's ELBO).
    """
    kind, out = kind_of_config(cfg), Path(out)
    if from_step is not None and not resume:
        raise UserError("--from-step picks the checkpoint to resume from: use it with --resume")
    with training_session(cfg, out, resume=resume, force=force, frozen=kind.frozen, changeable=kind.changeable) as (device, dist):
        data = load_dataset(kind.data_config(cfg))
        if kind.prepare_data is not None:  # a latent run: the autoencoder's latents, and the scale factor measured on them
            cfg, data = kind.prepare_data(cfg, data, device)
        kind.check_data(cfg, data)
        paths = RunPaths(out)
        model = init_model(kind, cfg)
        task = kind.build_task(cfg, model, device)
        y = data.y if kind.uses_labels(cfg) else None
        trainer = Trainer(model, task, data.x, y, cfg.train, paths, device, dist,
                          run_meta={"config": to_dict(cfg), "kind": kind.name}, progress=progress,
                          on_grid=lambda step, images: save_image_grid(images, paths.samples / f"step-{step}.png"))
        if resume and list_checkpoints(paths.checkpoints):
            trainer.resume(from_step)
        elif resume and dist.is_main:  # stopped before its first checkpoint: nothing to continue, so it starts again
            print(f"note: {out} has no checkpoint yet; training it from step 0 with its config", file=sys.stderr)
            paths.metrics.unlink(missing_ok=True)  # the lines of the attempt that never reached a checkpoint
            for p in sweep_partial_files(out):
                print(f"resume: removed {p} (left by an interrupted run)", file=sys.stderr)
        if resume and trainer.step > cfg.train.steps:
            raise UserError(f"--resume: the run is at step {trainer.step}, past train.steps={cfg.train.steps}; "
                            f"set train.steps above {trainer.step} to train further")
        if dist.is_main:  # only now: a --resume that fails above leaves the run's config.json as it was
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "config.json", json.dumps(to_dict(cfg), indent=2) + "\n")
        trainer.fit(stop_at=stop_at, budget_seconds=budget_seconds, clock=budget_clock)
        trainer.close()
        if dist.is_main:
            if paths.metrics.exists():
                plot_metrics(paths.metrics, paths.plots / "loss.png", keys=kind.plot_keys)
            finished = trainer.step >= cfg.train.steps or trainer.stopped_by_budget
            if kind.after_training is not None and finished:
                kind.after_training(cfg, trainer, out)
        return out


@dataclasses.dataclass
class LoadedRun:
    """A trained run's network with its (EMA) weights, in eval mode, and what its kind makes of it."""

    path: Path  # the run folder
    kind: str  # "diffusion" | "classifier" | "vae" | "dcgan"
    cfg: Any  # the run config, as stored in the checkpoint
    model: nn.Module
    step: int
    checkpoint: Path  # base path of the checkpoint (step-N, without suffix)

    @property
    def spec(self) -> RunKind:
        return get_kind(self.kind)

    @functools.cached_property
    def denoiser(self):
        """The Denoiser of a diffusion run (the same object on every access)."""
        if self.spec.denoiser is None:
            raise UserError(f"{self.path} is a {self.kind} run, not a diffusion model; it has no denoiser")
        return self.spec.denoiser(self.cfg, self.model)

    @functools.cached_property
    def classifier(self):
        """The NoisyClassifier of a classifier run, as classifier guidance takes it."""
        if self.spec.classifier is None:
            raise UserError(f"{self.path} is a {self.kind} run, not a noise-aware classifier; train one with `difflab classifier train`")
        return self.spec.classifier(self.cfg, self.model)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.spec.image_shape(self.cfg)

    @functools.cached_property
    def latent_decoder(self):
        """A latent run's map from sampled latents to images (its autoencoder's decoder); None in pixel space."""
        if self.spec.decoder is None:
            return None
        return self.spec.decoder(self.cfg, next(self.model.parameters()).device)

    @property
    def num_classes(self) -> int | None:
        """Classes the run is conditioned on (diffusion) or predicts (classifier); None when unconditional."""
        return getattr(self.cfg.model, "num_classes", None)


def load_run(spec: str | Path, *, kind: str | tuple[str, ...] | None = None, ema: bool = True,
             device: str | torch.device = "cpu") -> LoadedRun:
    """Load a trained run (folder: its newest checkpoint; or a step-N checkpoint) of any kind, or one of `kind`.

    Uses the config stored in the checkpoint; old run folders (no "kind" anywhere) are diffusion runs.
    """
    device = resolve_device(device)
    run_dir, ckpt = find_checkpoint(Path(spec))
    tensors, meta = load_checkpoint(ckpt)
    found = get_kind(kind_in(meta) or DEFAULT_KIND)
    wanted = (kind,) if isinstance(kind, str) else kind
    if wanted is not None and found.name not in wanted:
        hints = "; ".join(f"train a {w} run with `{get_kind(w).train_hint}`" for w in wanted)
        raise UserError(f"{spec} is a {found.name} run, not a {' or '.join(wanted)} run: {hints}")
    cfg = from_dict(found.config_class, {**meta["config"], "kind": found.name})
    model = found.build_model(cfg)
    model.load_state_dict(unflatten("ema" if ema else "model", tensors))
    model.to(device).eval()
    return LoadedRun(path=run_dir, kind=found.name, cfg=cfg, model=model, step=int(meta["step"]), checkpoint=ckpt)
