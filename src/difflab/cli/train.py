"""`difflab train`: train a run from a preset or JSON config, with --set overrides; --resume continues it."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a diffusion model", description="Train a diffusion model into a run folder.")
    p.add_argument("--config", default=None, help="preset name (digits, digits-cond; the baselines digits-vae, digits-dcgan), JSON file or run folder; "
                                                   "default: the run's own config with --resume, else 'digits'")
    p.add_argument("--out", required=True, type=Path, help="run folder to write (config.json, checkpoints/, metrics.jsonl, samples/, plots/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. --set train.steps=100 (repeatable; see `difflab config --keys`)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--force", action="store_true", help="replace a run already in --out (its checkpoints and logs are deleted)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from difflab.train.presets import resolve_config
    from difflab.train.run import train_run

    spec = args.config or (str(args.out) if args.resume else "digits")
    from difflab.baselines import baseline_kind_of, resolve_baseline_config, train_baseline_run

    if baseline_kind_of(spec) is not None:  # a VAE or DCGAN: config.json has "kind"
        out = train_baseline_run(resolve_baseline_config(spec, args.overrides), args.out, resume=args.resume, force=args.force,
                                 progress=not args.quiet)
        print(f"run: {out}")
        return 0
    cfg = resolve_config(spec, args.overrides)
    out = train_run(cfg, args.out, resume=args.resume, force=args.force, progress=not args.quiet)
    print(f"run: {out}")
    return 0
