"""One Trainer for diffusion models, classifiers and the baselines: AdamW, warm-up, clipping, EMA, accumulation, DDP,
atomic checkpoints, exact resume and an optional wall-clock budget. What is trained (the loss, the sample grid) is a
TrainTask; a task with `phases` (a GAN: discriminator, then generator) gets one optimiser per phase."""

from __future__ import annotations

import contextlib
import gc
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from difflab.data.atomic import atomic_write_text
from difflab.errors import Stopped, UserError
from difflab.training.checkpoint import (
    flatten,
    list_checkpoints,
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_checkpoint,
    unflatten,
)
from difflab.training.config import TrainConfig
from difflab.training.dist import DistInfo, all_gather_cat, barrier
from difflab.training.ema import EMA
from difflab.training.faults import RECENT_LOSSES, catch_signals, is_diverging, row_step, sweep_partial_files
from difflab.training.tensorboard import RunBoard


class TrainTask(Protocol):
    """What the Trainer trains. Randomness of a step is drawn for the GLOBAL batch from one generator and
    sliced per rank, so N ranks compute what 1 process would."""

    def draw(self, generator: torch.Generator, n: int, x_shape: tuple[int, ...]) -> dict[str, Tensor]:
        """Random inputs of the loss (timesteps, noise, ...) for n examples, each with leading dim n."""

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None, draws: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """(per-example loss (B,), per-example tensors to gather for `observe`)."""

    def observe(self, gathered: dict[str, Tensor]) -> None:
        """See the gathered per-example tensors of the global batch (e.g. to update importance sampling)."""

    def sample_grid(self, model: nn.Module, generator: torch.Generator) -> Tensor | None:
        """Images in [-1, 1] from the (EMA) model for a progress grid, or None."""

    def state_dict(self) -> dict[str, Tensor]: ...

    def load_state_dict(self, state: dict[str, Tensor]) -> None: ...

    # Optional members, looked up with getattr:
    #   phases: tuple[Phase, ...]   one optimiser per phase, stepped in order each step; `loss` then takes phase=name
    #   step_logs() -> dict[str, float]   extra columns of metrics.jsonl for the step just observed (e.g. the VAE's terms)


@dataclass(frozen=True)
class Phase:
    """One optimiser of a multi-optimiser task: its name (logged as loss_<name>) and the submodule whose parameters it updates."""

    name: str
    module: str  # attribute path in the model, e.g. "discriminator"


@dataclass
class RunPaths:
    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def plots(self) -> Path:
        return self.root / "plots"


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of one training step: a function of (seed, step) only, so resume needs no state for it."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63 - 1))


def epoch_permutation(seed: int, epoch: int, n: int) -> Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed((seed * 7_919 + epoch + 1) % (2**63 - 1)))


def batch_indices(seed: int, step: int, batch_size: int, n: int) -> Tensor:
    """Indices of the global batch of `step`: consecutive positions of seeded per-epoch permutations."""
    pos = torch.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offsets = pos // n, pos % n
    out = torch.empty(batch_size, dtype=torch.long)
    for e in epochs.unique().tolist():
        m = epochs == e
        out[m] = epoch_permutation(seed, e, n)[offsets[m]]
    return out


class Trainer:
    """Trains `model` on (x, y) held in memory; writes checkpoints, metrics and grids under `paths` (rank 0 only)."""

    def __init__(self, model: nn.Module, task: TrainTask, x: Tensor, y: Tensor | None, cfg: TrainConfig,
                 paths: RunPaths, device: torch.device, dist: DistInfo = DistInfo(), run_meta: dict[str, Any] | None = None,
                 progress: bool = True, on_grid=None):
        if cfg.batch_size % (dist.world_size * cfg.grad_accum):
            raise UserError(f"train.batch_size ({cfg.batch_size}) must be divisible by ranks x train.grad_accum ({dist.world_size} x {cfg.grad_accum})")
        self.cfg, self.task, self.paths, self.device, self.dist = cfg, task, paths, device, dist
        self.x, self.y = x, y
        self.model = model.to(device)
        self.ema = EMA(self.model, cfg.ema_rate, cfg.ema_power, cfg.ema_inv_gamma)
        self.phases: tuple[Phase, ...] = tuple(getattr(task, "phases", ()) or ())
        # A phase leaves the other phases' parameters without gradients: DDP must be told to expect that.
        self.ddp = DistributedDataParallel(self.model, find_unused_parameters=bool(self.phases)) if dist.enabled else None
        adamw = dict(lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay)
        if self.phases:
            self.opts = {ph.name: torch.optim.AdamW(self.model.get_submodule(ph.module).parameters(), **adamw) for ph in self.phases}
            self.opt = self.opts[self.phases[0].name]
        else:
            self.opt = torch.optim.AdamW(self.model.parameters(), **adamw)
        if cfg.precision == "fp16" and device.type != "cuda":
            raise UserError("train.precision=fp16 needs a CUDA GPU (loss scaling); on the CPU use train.precision=bf16 or fp32")
        self.scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
        self.step = 0
        self.run_meta = run_meta or {}
        self.progress = progress and dist.is_main
        self.on_grid = on_grid  # called with (step, images) to save a grid; set by the caller
        self.board: RunBoard | None = None  # TensorBoard events of the current fit (rank 0, train.tensorboard)
        self._nonfinite = 0
        self._recent_losses: list[float] = []  # the last good losses, for the divergence check (checkpointed: resume is exact)
        self.stopped_by_budget = False

    # ----- schedule -------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """Linear warm-up, then constant or cosine decay (Loshchilov & Hutter 2017)."""
        c = self.cfg
        if c.warmup_steps and step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        if c.lr_schedule == "cosine":
            done = (step - c.warmup_steps) / max(1, c.steps - c.warmup_steps)
            return c.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
        return c.lr

    # ----- one step ---------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        c, d = self.cfg, self.dist
        idx = batch_indices(c.seed, self.step, c.batch_size, self.x.shape[0])
        draws = self.task.draw(step_generator(c.seed, self.step), c.batch_size, tuple(self.x.shape[1:]))
        self.model.train()
        lr = self.lr_at(self.step)
        if not self.phases:
            for g in self.opt.param_groups:
                g["lr"] = lr
            self.opt.zero_grad(set_to_none=True)
            mean_loss, observed = self._forward_backward(idx, draws, None)
            diverging = is_diverging(mean_loss, self._recent_losses, c.divergence_factor)
            grad_norm, finite = self._update(self.opt, list(self.model.parameters()), mean_loss, skip=diverging)
            if finite:
                self._recent_losses = (self._recent_losses + [mean_loss])[-RECENT_LOSSES:]
            logs = {"loss": mean_loss, "lr": self.opt.param_groups[0]["lr"], "grad_norm": float(grad_norm), "skipped": int(not finite)}
        else:
            logs, observed, finite = {}, {}, True
            for ph in self.phases:
                opt = self.opts[ph.name]
                for g in opt.param_groups:
                    g["lr"] = lr
                self.model.zero_grad(set_to_none=True)  # also drops what the previous phase left in this phase's parameters
                mean_loss, obs = self._forward_backward(idx, draws, ph.name)
                params = list(self.model.get_submodule(ph.module).parameters())
                grad_norm, ok = self._update(opt, params, mean_loss, scaler_update=False)
                logs[f"loss_{ph.name}"], logs[f"grad_norm_{ph.name}"] = mean_loss, float(grad_norm)
                finite = finite and ok
                observed.update(obs)
            if self.scaler:
                self.scaler.update()
            # "loss" is the sum over phases (the progress bar and the divergence check read it); the columns above say more.
            logs = {"loss": sum(logs[f"loss_{ph.name}"] for ph in self.phases), **logs, "lr": lr, "skipped": int(not finite)}
        if finite:
            self.ema.update(self.model, self.step)  # the decay is a function of the step: resume and DDP ranks agree
            self._nonfinite = 0
        else:
            # Skip the update: a NaN/Inf batch must not poison the weights (mixed precision or divergence).
            self._nonfinite += 1
            if self._nonfinite > c.max_nonfinite:
                good = list_checkpoints(self.paths.checkpoints)
                last = f"the last good checkpoint is {good[-1].with_suffix('.safetensors')}" if good else "no checkpoint was written"
                raise TrainingDiverged(f"loss or gradient was NaN/Inf (or the loss over train.divergence_factor x its running median) "
                                       f"for {self._nonfinite} steps in a row at step {self.step} ({last}): "
                                       "lower train.lr, use train.precision=fp32, or raise train.grad_clip",
                                       step=self.step, nonfinite=self._nonfinite)
        if observed:
            gathered = {k: all_gather_cat(torch.cat(v), d) for k, v in observed.items()}
            self.task.observe(gathered)
        step_logs = getattr(self.task, "step_logs", None)
        if step_logs is not None:
            logs.update(step_logs())
        self.step += 1
        return logs

    def _forward_backward(self, idx: Tensor, draws: dict[str, Tensor], phase: str | None) -> tuple[float, dict[str, list[Tensor]]]:
        """Loss and gradients of this rank's share of the global batch, micro-batch by micro-batch; (global mean loss, extras)."""
        c, d = self.cfg, self.dist
        per_rank = c.batch_size // d.world_size
        lo = d.rank * per_rank
        micro = per_rank // c.grad_accum
        net = self.ddp if self.ddp is not None else self.model
        loss_sum = torch.zeros((), dtype=torch.float64)
        observed: dict[str, list[Tensor]] = {}
        for k in range(c.grad_accum):
            sl = slice(lo + k * micro, lo + (k + 1) * micro)
            xb = self.x[idx[sl]].to(self.device, non_blocking=True)
            yb = self.y[idx[sl]].to(self.device) if self.y is not None else None
            db = {key: v[sl].to(self.device) for key, v in draws.items()}
            sync = k == c.grad_accum - 1 or self.ddp is None
            ctx = net.no_sync() if not sync else contextlib.nullcontext()
            with ctx:
                with torch.autocast(self.device.type, dtype=_autocast_dtype(c.precision), enabled=c.precision != "fp32"):
                    if phase is None:
                        per_ex, extra = self.task.loss(net, xb, yb, db)
                    else:
                        per_ex, extra = self.task.loss(net, xb, yb, db, phase=phase)
                # Mean over this rank's share; DDP averages ranks -> the mean over the global batch.
                loss = per_ex.float().sum() / per_rank
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            loss_sum += per_ex.detach().double().sum().cpu()
            for key, v in extra.items():
                observed.setdefault(key, []).append(v.detach())
        total = loss_sum.to(self.device)
        if d.enabled:
            torch.distributed.all_reduce(total)
        return float(total) / c.batch_size, observed

    def _update(self, opt: torch.optim.Optimizer, params: list[nn.Parameter], mean_loss: float,
                scaler_update: bool = True, skip: bool = False) -> tuple[Tensor, bool]:
        """Unscale, clip and step `opt` unless the loss or the gradient is not finite (or `skip`: the loss is diverging);
        (gradient norm, whether the step was applied)."""
        c = self.cfg
        if self.scaler:
            self.scaler.unscale_(opt)
        params = [p for p in params if p.grad is not None]
        if c.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, c.grad_clip)
        else:
            grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params])) if params else torch.zeros(())
        finite = math.isfinite(mean_loss) and bool(torch.isfinite(grad_norm)) and not skip
        if finite:
            if self.scaler:
                self.scaler.step(opt)
            else:
                opt.step()
        if self.scaler and scaler_update:
            self.scaler.update()
        return grad_norm, finite

    # ----- loop -------------------------------------------------------------------------------
    def fit(self, stop_at: int | None = None, budget_seconds: float | None = None, clock=None) -> None:
        """Train until train.steps (or `stop_at`, for a pre-emptible job), checkpointing along the way.

        `budget_seconds`: also stop, with a checkpoint and a final grid, after the first step that ends more than this
        many seconds of `clock` (default time.perf_counter, wall-clock; time.process_time counts this process's CPU
        time instead) after the call began: a time budget, e.g. to compare models at equal training time.
        The last metrics line then carries "budget_stop": true and `stopped_by_budget` is set.
        """
        c = self.cfg
        clock = clock or time.perf_counter
        end = c.steps if stop_at is None else min(stop_at, c.steps)
        if c.tensorboard and self.dist.is_main and self.board is None:
            self.board = RunBoard(self.paths.root, self.step)  # after resume(): it hides what was logged past this step
        try:
            with catch_signals() as signals:
                self._fit(end, budget_seconds, clock, signals)
        finally:
            # Flushed and closed however fit ends (also on divergence), so the events on disk are complete.
            self._close_board()

    def _fit(self, end: int, budget_seconds: float | None, clock, signals: dict[str, int]) -> None:
        """The loop of `fit`: steps up to `end`, with metrics lines, grids and checkpoints on their schedules."""
        c = self.cfg
        bar = tqdm(total=end, initial=self.step, desc="train", disable=not self.progress, dynamic_ncols=True)
        t0, s0 = time.perf_counter(), self.step
        start = clock()
        while self.step < end:
            logs = self.train_step()
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.4f}")
            out_of_time = budget_seconds is not None and self._budget_spent(clock() - start >= budget_seconds)
            if self.step % c.log_every == 0 or self.step == end or out_of_time:
                now = time.perf_counter()
                its = (self.step - s0) / max(now - t0, 1e-9)
                t0, s0 = now, self.step
                self._log({"step": self.step, **logs, "it_per_s": its, "img_per_s": its * c.batch_size,
                           **({"budget_stop": True} if out_of_time else {})})
            if c.sample_every and self.step % c.sample_every == 0 and self.step != end and not out_of_time:
                self.write_grid()
            if self.step % c.checkpoint_every == 0 or self.step == end or out_of_time:
                if self._nonfinite == 0:  # never mid-streak: keep_last would rotate good checkpoints away for bad ones
                    self.save()
            if out_of_time:
                self.stopped_by_budget = True
                break
            if self._signal_received(signals):
                self._stop_on_signal(signals)
        bar.close()
        if self.step == c.steps or self.stopped_by_budget:
            self.write_grid()
        # Rank 0 alone writes the last checkpoint and grid; the others wait for it, so no rank tears down the process
        # group (and exits) while a peer is still using it: gloo can abort the early process at exit otherwise.
        barrier(self.dist)

    def close(self) -> None:
        """Release the DDP wrapper (its reducer holds the process group) before the group is destroyed; close the events."""
        self._close_board()
        self.ddp = None
        gc.collect()

    def _close_board(self) -> None:
        if self.board is not None:
            self.board.close()
            self.board = None

    def _signal_received(self, signals: dict[str, int]) -> bool:
        """Whether SIGINT/SIGTERM arrived; rank 0's word holds for every rank, so all stop after the same step."""
        got = "signal" in signals
        if not self.dist.enabled:
            return got
        flag = torch.tensor([float(signals.get("signal", 0))], device=self.device)
        torch.distributed.broadcast(flag, 0)
        signals.setdefault("signal", int(flag.item()))
        return bool(flag.item())

    def _stop_on_signal(self, signals: dict[str, int]) -> None:
        """Save (unless mid NaN streak), then stop with a message that names the checkpoint and the command to continue."""
        import signal as _signal

        num = int(signals["signal"])
        if self._nonfinite == 0 and self.dist.is_main and not (self.paths.checkpoints / f"step-{self.step}.json").exists():
            self.save()
        barrier(self.dist)
        good = list_checkpoints(self.paths.checkpoints)
        where = f"checkpoint {good[-1].with_suffix('.safetensors')} holds step {int(good[-1].name.split('-')[1])}" if good else "no checkpoint yet"
        raise Stopped(f"stopped by {_signal.Signals(num).name} at step {self.step}; {where}; continue with "
                      f"`difflab train --out {self.paths.root} --resume`", num)

    def _budget_spent(self, spent: bool) -> bool:
        """Rank 0's clock decides for every rank, so all ranks stop after the same step."""
        if not self.dist.enabled:
            return spent
        flag = torch.tensor([float(spent)], device=self.device)
        torch.distributed.broadcast(flag, 0)
        return bool(flag.item())

    def _log(self, row: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        # Strict JSON: NaN / inf become null (json.dumps would write bare NaN tokens that other readers reject).
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        with open(self.paths.metrics, "a") as f:
            f.write(json.dumps(clean, allow_nan=False) + "\n")
        if self.board is not None:
            # The decay of the EMA update that ended this step (update k used decay(k), k = step - 1).
            self.board.log_row(row, self.ema.decay(row["step"] - 1))

    def write_grid(self) -> None:
        if not self.dist.is_main or (self.on_grid is None and self.board is None):
            return
        images = self.task.sample_grid(self.ema.shadow, torch.Generator().manual_seed(self.cfg.seed))
        if images is not None:
            if self.on_grid is not None:
                self.on_grid(self.step, images)
            if self.board is not None:
                self.board.log_grid(self.step, images)

    # ----- checkpoints ------------------------------------------------------------------------
    def save(self) -> None:
        if not self.dist.is_main:
            return
        tensors = {
            **flatten("model", self.model.state_dict()),
            **flatten("ema", self.ema.state_dict()),
        }
        if self.phases:
            opt_meta = {}
            for name, opt in self.opts.items():
                opt_tensors, opt_meta[name] = optimizer_to_tensors(opt)
                tensors.update(flatten(f"optim_{name}", opt_tensors))
        else:
            opt_tensors, opt_meta = optimizer_to_tensors(self.opt)
            tensors.update(flatten("optim", opt_tensors))
        tensors.update({**flatten("task", self.task.state_dict()), "rng.torch": torch.get_rng_state()})
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
        meta = {"step": self.step, "optimizer": opt_meta, "nonfinite": self._nonfinite, "recent_losses": self._recent_losses,
                "ema": self.ema.schedule(), **self.run_meta}
        if self.scaler:
            meta["grad_scaler"] = self.scaler.state_dict()
        save_checkpoint(self.paths.checkpoints, self.step, tensors, meta, self.cfg.keep_last)

    def resume(self, from_step: int | None = None) -> int:
        """Restore the newest complete checkpoint (or the one of `from_step`): weights, EMA, optimizer, step, RNG, task
        state. Returns the step. Checkpoints after `from_step` move to checkpoints/superseded-from-N/, never deleted."""
        found = list_checkpoints(self.paths.checkpoints)
        if not found:
            raise UserError(f"--resume: no checkpoint in {self.paths.checkpoints}; start without --resume")
        if from_step is not None:
            steps = [int(p.name.split("-")[1]) for p in found]
            if from_step not in steps:
                raise UserError(f"--from-step {from_step}: no such checkpoint in {self.paths.checkpoints}; it has steps {', '.join(map(str, steps))}")
            if self.dist.is_main and from_step != steps[-1]:
                aside = self.paths.checkpoints / f"superseded-from-{from_step}"
                aside.mkdir(exist_ok=True)
                for p, step in zip(found, steps):
                    if step > from_step:
                        for suffix in (".json", ".safetensors"):  # JSON first: a kill in between leaves no half checkpoint
                            if p.with_suffix(suffix).exists():
                                p.with_suffix(suffix).rename(aside / (p.name + suffix))
                print(f"resume: from step {from_step}; the later checkpoints are kept in {aside}", file=sys.stderr)
            barrier(self.dist)
            found = [p for p, step in zip(found, steps) if step <= from_step]
        if self.dist.is_main:
            for p in sweep_partial_files(self.paths.root):
                print(f"resume: removed {p} (left by an interrupted run)", file=sys.stderr)
        tensors, meta = load_checkpoint(found[-1])
        self.model.load_state_dict(unflatten("model", tensors))
        self.ema.load_state_dict(unflatten("ema", tensors))
        if "ema" not in meta:
            self.ema.power = 0.0  # written before the EMA warm-up existed: continue with the constant rate it was trained with
        if self.phases:
            for name, opt in self.opts.items():
                optimizer_from_tensors(opt, unflatten(f"optim_{name}", tensors), meta["optimizer"][name])
        else:
            optimizer_from_tensors(self.opt, unflatten("optim", tensors), meta["optimizer"])
        self.task.load_state_dict(unflatten("task", tensors))
        torch.set_rng_state(tensors["rng.torch"])
        if torch.cuda.is_available():
            states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
            if states:
                torch.cuda.set_rng_state_all(states)
        if self.scaler and "grad_scaler" in meta:
            self.scaler.load_state_dict(meta["grad_scaler"])
        self.step = int(meta["step"])
        self._nonfinite = int(meta.get("nonfinite", 0))
        self._recent_losses = [float(v) for v in meta.get("recent_losses", [])]
        self._truncate_metrics()
        return self.step

    def _truncate_metrics(self) -> None:
        """Drop metric lines a killed run wrote after its last checkpoint, so the log matches an uninterrupted run."""
        if not self.dist.is_main or not self.paths.metrics.exists():
            return
        keep = [ln for ln in self.paths.metrics.read_text().splitlines() if row_step(ln) is not None and row_step(ln) <= self.step]
        atomic_write_text(self.paths.metrics, "".join(ln + "\n" for ln in keep))


class TrainingDiverged(UserError):
    """Training produced NaN/Inf losses repeatedly; `step` is where it stopped, `nonfinite` the NaN/Inf steps in a row."""

    def __init__(self, message: str, step: int | None = None, nonfinite: int | None = None):
        super().__init__(message)
        self.step, self.nonfinite = step, nonfinite


def _autocast_dtype(precision: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
