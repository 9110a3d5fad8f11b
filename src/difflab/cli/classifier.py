"""`difflab classifier train`: train ADM's noise-aware classifier into a run folder; print its accuracy vs t."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classifier", help="train the noise-aware classifier of classifier guidance",
                       description="The noise-aware classifier p(y | x_t) of classifier guidance (Dhariwal & Nichol 2021, Sec. 4).")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = actions.add_parser("train", help="train a classifier on x_t at random t; report accuracy vs t on held-out data",
                           description="Train a noise-aware classifier into a run folder (config.json, checkpoints/, metrics.jsonl, "
                                       "accuracy_vs_t.json, plots/). Its process.* must match the diffusion model it will guide.")
    t.add_argument("--data", default=None, help="labelled data: 'digits', an image folder with class sub-folders or an .npz with arr_1, "
                                                 "optionally ':train' (default: the config's, digits:train)")
    t.add_argument("--out", required=True, type=Path, help="run folder to write")
    t.add_argument("--config", default=None, help="classifier preset (digits-clf), JSON file or classifier run folder; default digits-clf "
                                                   "(its own config with --resume)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.steps=500 or --set process.T=500 (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    t.add_argument("--force", action="store_true", help="replace a run already in --out")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    import dataclasses

    from difflab.data import parse_data_spec
    from difflab.train.classifier import resolve_classifier_config, train_classifier_run

    spec = args.config or (str(args.out) if args.resume else "digits-clf")
    cfg = resolve_classifier_config(spec, args.overrides)
    if args.data is not None:
        cfg = dataclasses.replace(cfg, data=parse_data_spec(args.data, cfg.data))
    out = train_classifier_run(cfg, args.out, resume=args.resume, force=args.force, progress=not args.quiet)
    report = out / "accuracy_vs_t.json"
    if report.exists():
        rep = json.loads(report.read_text())
        print(f"accuracy vs t on {rep['split']} ({rep['n_images']} images x {rep['repeats']} noise draws; chance {rep['chance']:.2f}):")
        print(f"{'t':>6}  {'accuracy':>8}  {'nll':>6}")
        for r in rep["rows"]:
            print(f"{r['t']:>6}  {r['accuracy']:>8.3f}  {r['nll']:>6.3f}")
        print(f"mean accuracy over t: {rep['mean_accuracy']:.3f}")
    print(f"run: {out}")
    return 0
