"""`difflab report`: a self-contained static page (index.html) of one or more runs: config, curves, samples, the
denoising chain and every eval / sweep / compare / ablation result found in the run folders (docs/report.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from difflab.cli.options import add_device


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write a static HTML page of one or more runs",
                       description="Write DIR/index.html: one self-contained page (images inline, no server, no network) with each run's "
                                   "resolved config, loss / grad-norm / lr curves, sample grids over training, the denoising chain of a few "
                                   "samples, and every eval.json / sweep / compare / ablation result found in the run folder; several runs "
                                   "side by side. docs/report.md describes each section.")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                   help="a run folder (written by `difflab train` or `difflab demo`); several are shown side by side")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="a folder: the page is written to DIR/index.html")
    p.add_argument("--force", action="store_true",
                   help="write into --out even when it exists and is not empty (its index.html is replaced; nothing is deleted)")
    p.add_argument("--chain-steps", type=int, default=8, metavar="K",
                   help="columns of the denoising chain: x_t and x0-hat at this many of the 50 DDIM steps")
    p.add_argument("--no-chain", action="store_true", help="leave out the denoising chain (no network is loaded or sampled)")
    add_device(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from difflab.experiments.report import ReportRequest, build_report

    page = build_report(ReportRequest(runs=tuple(args.runs), out=args.out, force=args.force, chain=not args.no_chain,
                                      chain_steps=args.chain_steps, device=args.device))
    print(f"report: {page}")
    return 0
