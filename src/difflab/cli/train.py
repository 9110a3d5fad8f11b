"""`difflab train`: train a run of any kind from a preset or JSON config, with --set overrides; --resume continues it."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_train_args(p: argparse.ArgumentParser, *, default_config: str, kinds: str) -> None:
    """The flags of every training command (`train`, `classifier train`)."""
    p.add_argument("--config", default=None, help=f"preset name ({kinds}), JSON file or run folder; "
                                                   f"default: the run's own config with --resume, else '{default_config}'")
    p.add_argument("--data", default=None, help="training data, name[:split]: digits, an image folder (class sub-folders give labels) or "
                                                 "an .npz; a bare name is all of its images (default: the config's data)")
    p.add_argument("--out", required=True, type=Path, help="a folder: the run (config.json, checkpoints/, metrics.jsonl, samples/, plots/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.steps=100 (repeatable; see `difflab config --keys`)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--from-step", type=int, default=None, metavar="N",
                   help="with --resume: continue from the checkpoint of step N instead (later ones are kept aside, not deleted)")
    p.add_argument("--force", action="store_true", help="replace a run already in --out (its checkpoints and logs are deleted)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    from difflab.runs import preset_names

    p = sub.add_parser("train", help="train a run (diffusion, vae, dcgan, classifier)", description="Train a run of any kind into a run folder. "
                       "The Python twin is difflab.train(config, out).")
    add_train_args(p, default_config="digits", kinds=", ".join(preset_names()))
    p.set_defaults(func=run)


def train_from_args(args: argparse.Namespace, *, default_config: str, kinds: tuple[str, ...] | None = None) -> Path:
    import dataclasses

    from difflab.data import parse_data_spec
    from difflab.runs import resolve_config, train_run

    from difflab.errors import UserError

    if args.resume and not (args.out / "config.json").is_file():
        raise UserError(f"--resume: {args.out} holds no run (no config.json); start it without --resume")
    spec = args.config or (str(args.out) if args.resume else default_config)
    cfg = resolve_config(spec, args.overrides, kinds=kinds)
    if args.data is not None:
        cfg = dataclasses.replace(cfg, data=parse_data_spec(args.data, cfg.data))
    return train_run(cfg, args.out, resume=args.resume, force=args.force, progress=not args.quiet, from_step=args.from_step)


def run(args: argparse.Namespace) -> int:
    out = train_from_args(args, default_config="digits")
    print(f"run: {out}")
    return 0
