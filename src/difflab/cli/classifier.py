"""`difflab classifier train`: train ADM's noise-aware classifier into a run folder; print its accuracy vs t."""

from __future__ import annotations

import argparse
import json

from difflab.cli.train import add_train_args, train_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classifier", help="train the noise-aware classifier of classifier guidance",
                       description="The noise-aware classifier p(y | x_t) of classifier guidance (Dhariwal & Nichol 2021, Sec. 4).")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = actions.add_parser("train", help="train a classifier on x_t at random t; report accuracy vs t on held-out data",
                           description="Train a noise-aware classifier into a run folder (config.json, checkpoints/, metrics.jsonl, "
                                       "accuracy_vs_t.json, plots/). Its process.* must match the diffusion model it will guide.")
    add_train_args(t, default_config="digits-clf", kinds="digits-clf")
    t.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    out = train_from_args(args, default_config="digits-clf", kinds=("classifier",))
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
