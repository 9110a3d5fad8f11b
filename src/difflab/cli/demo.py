"""`difflab demo`: the whole loop on the built-in digits in minutes on a CPU — train, sample, plot, evaluate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train, sample and evaluate the digits preset on the CPU",
                       description="Train the digits preset (resuming or reusing a finished run in --out), sample, plot and evaluate.")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default runs/demo)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--n", type=int, default=1000, help="number of samples for evaluation")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from difflab.train.checkpoint import list_checkpoints
    from difflab.train.generate import SampleRequest, generate, write_samples
    from difflab.train.presets import resolve_config
    from difflab.train.run import train_run

    out: Path = args.out
    cfg = resolve_config("digits", args.overrides)
    done = list_checkpoints(out / "checkpoints")
    if done and json.loads(done[-1].with_suffix(".json").read_text())["step"] >= cfg.train.steps:
        print(f"training: {out} is already trained to step {cfg.train.steps}; reusing it")
    else:
        resume = bool(done)
        print(f"training: digits preset, {cfg.train.steps} steps{' (resuming)' if resume else ''} -> {out}")
        train_run(cfg, out, resume=resume, force=not resume and (out / "config.json").exists(), progress=not args.quiet)
    written = []
    for sampler, steps in (("ddim", 50), ("ddpm", 1000)):
        res = generate(SampleRequest(run=out, sampler=sampler, steps=steps, n=100, seed=0), progress=not args.quiet)
        path = out / f"samples/final-{sampler}-{steps}.png"
        write_samples(path, res.images, res.labels)
        written.append(f"{path}  ({sampler}, {steps} steps, {res.seconds:.1f}s)")
    print("wrote:")
    for w in written:
        print(f"  {w}")
    print(f"  {out / 'plots/loss.png'}  (training loss)")
    print(f"  {out / 'metrics.jsonl'}")
    return 0
