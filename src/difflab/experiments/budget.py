"""Train a diffusion model, a VAE and a DCGAN on the same data with the same wall-clock budget (seed 000's setting).

Each model keeps its own preset's network, optimiser, learning rate and EMA (diffusion: the `digits` U-Net,
unconditional, eps / L_simple; `digits-vae`; `digits-dcgan`), with two changes that make the budget the only stop:
the learning rate is constant after the warm-up (a cosine decay needs the step count in advance, and a step count
estimated on a shared machine is off by 2x either way), and train.steps is only a cap far above what fits. A short
in-process calibration (not charged to the budget) measures seconds per step to size the warm-up, the log interval
and the cap. The Trainer stops after the step that crosses the budget and checkpoints.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from difflab.configs import from_dict, to_dict
from difflab.data import DataConfig, load_dataset, parse_data_spec
from difflab.errors import UserError

BUDGET_RUNS = ("ddpm", "vae", "dcgan")  # run folder names under the runs directory
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}  # cpu: this process's CPU time, immune to other jobs' load


def budget_configs(data: str) -> dict:
    """{"ddpm": RunConfig, "vae": VAERunConfig, "dcgan": GANRunConfig} for the data spec, networks sized to its images."""
    from difflab.runs import GANRunConfig, RunConfig, VAERunConfig, resolve_config

    base_data = parse_data_spec(data, DataConfig(split="train"))
    x = load_dataset(dataclasses.replace(base_data, labels="ignore")).x
    c, s = int(x.shape[1]), int(x.shape[-1])
    if x.shape[-1] != x.shape[-2] or s < 8 or s & (s - 1):
        raise UserError(f"--data {data}: the comparison needs square images whose side is a power of two >= 8; got {x.shape[-2]}x{x.shape[-1]} "
                        "(set data.image_size in a config, or resize the images)")
    ddpm = to_dict(resolve_config("digits"))
    ddpm["data"] = to_dict(dataclasses.replace(base_data, labels="ignore"))
    ddpm["model"].update(num_classes=None, class_dropout_null=False, image_size=s, in_channels=c, out_channels=c,
                         attention_resolutions=[s // 2])
    vae = to_dict(resolve_config("digits-vae"))
    gan = to_dict(resolve_config("digits-dcgan"))
    for d in (vae, gan):
        d["data"] = to_dict(dataclasses.replace(base_data, labels="ignore"))
        d["model"].update(image_size=s, in_channels=c)
    if s > 8:
        gan["model"]["start_size"] = 4  # Radford et al.'s 4x4; the digits preset starts at 2x2 to get two levels at 8x8
    return {"ddpm": from_dict(RunConfig, ddpm), "vae": from_dict(VAERunConfig, vae), "dcgan": from_dict(GANRunConfig, gan)}


def _trainer_for(cfg, workdir: Path):
    """A Trainer (and nothing written but scratch files) for the run config of any kind."""
    from difflab.runs import init_model, kind_of_config
    from difflab.training.trainer import RunPaths, Trainer

    kind = kind_of_config(cfg)
    data = load_dataset(kind.data_config(cfg))
    model = init_model(kind, cfg)
    task = kind.build_task(cfg, model, torch.device("cpu"))
    train = dataclasses.replace(cfg.train, device="cpu")
    y = data.y if kind.uses_labels(cfg) else None
    return Trainer(model, task, data.x, y, train, RunPaths(workdir), torch.device("cpu"), progress=False)


def seconds_per_step(cfg, warmup: int = 3, steps: int = 10, clock=time.perf_counter) -> float:
    """Seconds of `clock` per training step of `cfg` on this machine right now."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _trainer_for(cfg, Path(tmp))
        for _ in range(warmup):
            trainer.train_step()
        t0 = clock()
        for _ in range(steps):
            trainer.train_step()
        return (clock() - t0) / steps


def fit_steps_to_budget(cfg, budget_seconds: float, sec_per_step: float, cap_factor: float = 20.0, checkpoints: int = 0):
    """cfg for a budget-stopped run: constant lr after warm-up, steps capped at cap_factor x the estimate, ~200 log lines;
    with `checkpoints` > 0 about that many checkpoints are kept along the way (for a quality-vs-training-time curve)."""
    expected = max(2, int(budget_seconds / max(sec_per_step, 1e-6)))
    t = cfg.train
    every = max(1, expected // checkpoints) if checkpoints > 0 else 10 * expected
    train = dataclasses.replace(t, steps=int(cap_factor * expected), lr_schedule="constant", checkpoint_every=every,
                                sample_every=0, keep_last=0 if checkpoints > 0 else 1, log_every=max(1, expected // 200),
                                warmup_steps=min(t.warmup_steps, expected // 10))
    return dataclasses.replace(cfg, train=train), expected


def train_with_budget(data: str, budget_seconds: float, runs_dir: Path, *, clock: str = "wall", checkpoints: int = 0,
                      force: bool = False, progress: bool = True, log=print) -> dict[str, dict]:
    """Train the three models into runs_dir/{ddpm,vae,dcgan} with `budget_seconds` each of `clock` ("wall" or "cpu");
    returns per-run facts.

    "wall" is the brief's wall-clock budget; on a machine shared with other jobs their load decides how much compute each
    model gets (one slot may run 5x slower than another). "cpu" counts this process's CPU time (time.process_time), which
    with one torch thread is the compute the model actually received.
    """
    if not budget_seconds > 0:
        raise UserError(f"--budget must be positive (minutes); got {budget_seconds / 60:g}")
    if clock not in CLOCKS:
        raise UserError(f"unknown --clock {clock!r}; valid: {', '.join(CLOCKS)}")
    from difflab.runs import prepare_run_dir, train_run

    configs = budget_configs(data)
    if not force:  # refuse before spending any time
        for name in BUDGET_RUNS:
            prepare_run_dir(runs_dir / name, resume=False, force=False)
    facts = {}
    for name in BUDGET_RUNS:
        cfg = configs[name]
        sps = seconds_per_step(cfg, clock=CLOCKS[clock])
        cfg, expected = fit_steps_to_budget(cfg, budget_seconds, sps, checkpoints=checkpoints)
        log(f"{name}: {sps * 1000:.1f} ms/step now -> about {expected} steps in {budget_seconds:.0f}s ({clock} clock)")
        t0 = time.perf_counter()
        train_run(cfg, runs_dir / name, force=force, progress=progress, budget_seconds=budget_seconds, budget_clock=CLOCKS[clock])
        from difflab.experiments.runs import training_curve

        rows = training_curve(runs_dir / name / "metrics.jsonl")
        facts[name] = {"clock": clock, "expected_steps": expected, "steps": rows[-1]["step"] if rows else 0,
                       "budget_stop": bool(rows and rows[-1].get("budget_stop")), "calibrated_ms_per_step": round(1000 * sps, 2),
                       "seconds_with_setup": round(time.perf_counter() - t0, 1)}
    return facts
