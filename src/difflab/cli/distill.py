"""`difflab distill`: a few-step student from a trained diffusion run, by progressive or consistency distillation."""

from __future__ import annotations

import argparse
from pathlib import Path

from difflab.cli.options import add_device, set_threads


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="distil a trained diffusion run into a 1-4 step student (progressive or consistency)",
                       description="Train a few-step student of --teacher into --out (docs/distillation.md). Sample it with "
                                   "`difflab sample --run OUT --steps 1|2|4`, or difflab.load_run(OUT).sample(n, steps=...).")
    p.add_argument("--teacher", type=Path, default=None, help="the teacher: a diffusion run folder (newest checkpoint) or a step-N.safetensors; "
                                                              "with --resume, optional (it must be the teacher the student started with)")
    p.add_argument("--method", choices=("progressive", "consistency"), default=None,
                   help="'progressive' (Salimans & Ho 2022) or 'consistency' (Song et al. 2023); not with --resume")
    p.add_argument("--out", required=True, type=Path, help="a folder: the student run (progressive: its rounds in OUT/rounds/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a student config key, e.g. --set train.steps=500 (per round) or --set distill.guidance_scale=2 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the student in --out (the round it stopped in)")
    p.add_argument("--force", action="store_true", help="replace a student already in --out")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    add_device(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from difflab.errors import UserError
    from difflab.runs.student.distill import distill, resumed_config, student_config

    set_threads(args.threads)
    overrides = [*args.overrides, f"train.device={args.device}"] if args.device != "auto" else list(args.overrides)
    if args.resume:
        if args.force:
            raise UserError("--resume and --force contradict each other: --resume continues the student, --force replaces it")
        if args.method is not None:
            raise UserError("--resume continues the student with its own method: drop --method")
        cfg = resumed_config(args.out, args.teacher, overrides)
    else:
        if args.teacher is None or args.method is None:
            raise UserError("give --teacher RUN and --method progressive|consistency (or --resume to continue a student)")
        cfg = student_config(args.teacher, args.method, overrides)
    out = distill(cfg, args.out, resume=args.resume, force=args.force, progress=not args.quiet)
    print(f"student: {out} ({cfg.distill.method}; sample it with --steps {', '.join(map(str, cfg.served_steps))})")
    return 0
