"""`difflab distill`: a student config from a teacher run, and the training of it — one run for consistency
distillation, one resumable run per round for progressive distillation, assembled into the student OUT."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

from difflab.configs import apply_overrides, from_dict, to_dict
from difflab.data.atomic import atomic_write_text
from difflab.errors import UserError
from difflab.runs.folder import prepare_run_dir
from difflab.runs.session import train_run
from difflab.runs.student.config import METHODS, DistillConfig, StudentConfig, StudentSampleConfig, TeacherConfig, with_round
from difflab.runs.student.teacher import check_unchanged, reference, sha256_file, teacher_kind
from difflab.training.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint

COST_FILE = "distill.json"  # CPU seconds of the distillation, per round, summed over resumes


def _usable_teacher(spec, meta: dict, method: str):
    """The teacher's RunConfig; one-line errors for a run that is not a diffusion run or that `method` cannot use."""
    from difflab.runs.diffusion import RunConfig

    kind = teacher_kind(meta)
    if kind != "diffusion":
        raise UserError(f"--teacher {spec} is a {kind} run, not a diffusion run: distil a U-Net diffusion model "
                        "(train one with `difflab train --config digits`)")
    tcfg = from_dict(RunConfig, {**meta["config"], "kind": "diffusion"})
    if tcfg.condition.kind != "none":
        raise UserError(f"--teacher {spec} is an image-conditional model (condition.kind '{tcfg.condition.kind}'); "
                        "distil an unconditional or class-conditional one")
    if method == "progressive" and tcfg.process.kind != "vp":
        raise UserError(f"--teacher {spec} has a '{tcfg.process.kind}' process: progressive distillation needs a variance-preserving "
                        "(VP) one, whose v-target and max(SNR, 1) weighting assume alpha^2 + sigma^2 = 1 (Salimans & Ho 2022); "
                        "use --method consistency")
    if tcfg.denoiser.parameterization == "mu":
        raise UserError(f"--teacher {spec} predicts the posterior mean ('mu'), which is tied to single steps t -> t-1; "
                        "a distillation target needs its jumps between distant timesteps (train with eps, x0 or v)")
    return tcfg


def student_config(teacher: str | Path, method: str, overrides=()) -> StudentConfig:
    """The student of `teacher` (a diffusion run folder or checkpoint) by `method`, with `key=value` overrides."""
    if method not in METHODS:
        raise UserError(f"unknown --method '{method}'; valid: {', '.join(METHODS)}")
    ref, meta = reference(teacher)
    tcfg = _usable_teacher(teacher, meta, method)
    if any(item.partition("=")[0].strip() in ("kind", "distill.method") or item.startswith("teacher.") for item in overrides):
        raise UserError("the kind, the method and the teacher come from --method and --teacher, not --set")
    # Both papers fine-tune from the teacher: its optimiser settings at a tenth of the rate, no warm-up, a constant rate.
    train = dataclasses.replace(tcfg.train, steps=1000, lr=tcfg.train.lr / 10, warmup_steps=0, lr_schedule="constant",
                                label_dropout=0.0, sample_every=0, checkpoint_every=250)
    sampler = "ddim" if method == "progressive" else "consistency"
    base = StudentConfig(teacher=ref, distill=DistillConfig(method=method, teacher_steps=min(64, 1 << (tcfg.process.T.bit_length() - 1))), data=tcfg.data,
                         model=tcfg.model, process=tcfg.process, denoiser=tcfg.denoiser, train=train,
                         sample=StudentSampleConfig(sampler=sampler, grid_size=tcfg.sample.grid_size))
    cfg = apply_overrides(base, list(overrides))
    if cfg.distill.guidance_scale > 0 and tcfg.train.label_dropout == 0:
        raise UserError(f"distill.guidance_scale needs a teacher trained with label dropout (its null label); {teacher} has "
                        "train.label_dropout=0 (train one with --config digits-cond)")
    return cfg


def resumed_config(out: Path, teacher: str | Path | None, overrides=()) -> StudentConfig:
    """The student in `out` with `overrides` (train.* and sample.* only), after checking its teacher is unchanged."""
    if not (out / "config.json").is_file():
        raise UserError(f"--resume: {out} holds no run (no config.json); start it without --resume")
    saved = json.loads((out / "config.json").read_text())
    if saved.get("kind") != "student":
        raise UserError(f"--resume: {out} is not a student run; continue it with `difflab train --out {out} --resume`")
    cfg = from_dict(StudentConfig, saved)
    new = apply_overrides(cfg, list(overrides))
    for key in ("teacher", "distill", "data", "model", "process", "denoiser"):
        if getattr(new, key) != getattr(cfg, key):
            raise UserError(f"--resume: the '{key}' section cannot change; only train.* and sample.* may change on resume")
    check_unchanged(cfg.teacher, teacher)
    return new


def distill(cfg: StudentConfig, out: str | Path, *, resume: bool = False, force: bool = False, progress: bool = True,
            stop_at: int | None = None) -> Path:
    """Train the student `cfg` into `out`; `stop_at` pauses after that many training steps in all (rounds included).

    Consistency: one run. Progressive: round k (k = 1..R) is the run out/rounds/steps-<n> taught by round k-1 (round 1 by the
    teacher), skipped when finished, resumed when started; then the students of distill.student_steps are assembled
    into out's checkpoint. The CPU time of every stage is added up in out/distill.json.
    """
    out = Path(out)
    if cfg.distill.method == "consistency":
        return _timed(out, "consistency", lambda: train_run(cfg, out, resume=resume, force=force, progress=progress, stop_at=stop_at))
    if not resume:
        prepare_run_dir(out, resume=False, force=force, check_only=True)  # refuse before any work
        if force:
            for p in (out / "rounds", out / COST_FILE, *(out / f for f in ("config.json", "checkpoints"))):
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(to_dict(cfg), indent=2) + "\n")
    teacher, done = cfg.teacher, 0
    for k in range(1, cfg.distill.rounds + 1):
        n = cfg.distill.round_steps(k)[1]
        folder, round_cfg = out / "rounds" / f"steps-{n}", with_round(cfg, k, teacher)
        if _finished(folder, cfg.train.steps) is None:
            again = (folder / "config.json").is_file()
            left = None if stop_at is None else stop_at - done
            if left is not None and left <= 0:
                return out
            if progress:
                print(f"round {k}/{cfg.distill.rounds}: {2 * n} -> {n} DDIM steps ({'resumed' if again else 'new'}) in {folder}", file=sys.stderr)
            _timed(out, f"round-{k}", lambda: train_run(round_cfg, folder, resume=again, progress=progress, stop_at=left))
        last = _finished(folder, cfg.train.steps)
        if last is None:  # paused by stop_at
            return out
        teacher, done = TeacherConfig(str(last.resolve()), sha256_file(last)), done + cfg.train.steps
    _assemble(cfg, out)
    return out


def _finished(folder: Path, steps: int) -> Path | None:
    """The final checkpoint (.safetensors) of a round that trained all its steps, else None."""
    found = list_checkpoints(folder / "checkpoints")
    return found[-1].with_suffix(".safetensors") if found and int(found[-1].name.split("-")[1]) >= steps else None


def _assemble(cfg: StudentConfig, out: Path) -> None:
    """out's checkpoint: model.<n>.* and ema.<n>.* from the final checkpoint of the round that ends at n steps."""
    tensors = {}
    for k in range(1, cfg.distill.rounds + 1):
        n = cfg.distill.round_steps(k)[1]
        if n not in cfg.distill.student_steps:
            continue
        ckpt = _finished(out / "rounds" / f"steps-{n}", cfg.train.steps)
        round_tensors, _ = load_checkpoint(ckpt.with_suffix(""))
        for part in ("model", "ema"):
            tensors.update({f"{part}.{n}.{key[len(part) + 1:]}": v for key, v in round_tensors.items() if key.startswith(part + ".")})
    meta = {"step": cfg.distill.rounds * cfg.train.steps, "config": to_dict(cfg), "kind": "student"}
    save_checkpoint(out / "checkpoints", meta["step"], tensors, meta, keep_last=0)


def _timed(out: Path, stage: str, fn):
    """Run `fn`, adding its CPU seconds (this process, all threads) to out/distill.json under `stage`."""
    t0 = time.process_time()
    try:
        return fn()
    except UserError:  # refused: nothing was trained, nothing is written
        raise
    except BaseException:  # stopped by a signal or failed: what was spent still counts
        _add_cost(out, stage, time.process_time() - t0)
        raise
    else:
        _add_cost(out, stage, time.process_time() - t0)


def _add_cost(out: Path, stage: str, spent: float) -> None:
    path = out / COST_FILE
    if out.is_dir() and (out / "config.json").is_file():
        cost = json.loads(path.read_text()) if path.is_file() else {"stages": {}}
        cost["stages"][stage] = cost["stages"].get(stage, 0.0) + spent
        cost["cpu_seconds"] = sum(cost["stages"].values())
        atomic_write_text(path, json.dumps(cost, indent=2) + "\n")
