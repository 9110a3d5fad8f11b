"""`difflab ablation ddpm`: Ho et al. 2020's Table 2 — mu vs eps prediction x learned/fixed Sigma x L vs L_simple, trained and scored."""

from __future__ import annotations

import argparse
from pathlib import Path

from difflab.cli.options import add_cache_dir, cache_dir, set_threads
from difflab.samplers import SAMPLERS


def register(sub: argparse._SubParsersAction) -> None:
    from difflab.experiments.ablation import CELL_NAMES

    p = sub.add_parser("ablation", help="run a paper's ablation as a table (ddpm: Ho et al. 2020 Table 2)",
                       description="Train every cell of an ablation with the same settings and score it.")
    kinds = p.add_subparsers(dest="ablation", metavar="ABLATION", required=True)
    a = kinds.add_parser("ddpm", help="the DDPM objective ablation: six cells, FID, NLL (bits/dim), stability",
                         description="Ho et al. 2020 Table 2 on your data: mu- or eps-prediction, learned or fixed Sigma, L (vlb) or the "
                                     "simple MSE. Writes ablation.md, ablation.json, ablation_losses.png, ablation_samples.png and the "
                                     "cells' run folders (OUT/cells/NAME).")
    a.add_argument("--data", default="digits:train", help="training data, name[:split]; held-out images come from its test split")
    a.add_argument("--train-steps", type=int, required=True, help="training steps of every cell")
    a.add_argument("--out", required=True, type=Path, help="a folder: the report and the cells' runs")
    a.add_argument("--config", dest="base", default="digits", help="run preset, JSON file or run folder the cells start from (default digits; made unconditional)")
    a.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key in every cell (repeatable)")
    a.add_argument("--cell-set", dest="cell_overrides", action="append", default=[], metavar="CELL:KEY=VALUE",
                   help=f"override a key in one cell, e.g. eps-simple:train.lr=1e-4 (repeatable); cells: {', '.join(CELL_NAMES)}")
    a.add_argument("--cells", default=",".join(CELL_NAMES), help="comma-separated subset of the cells (default: all six)")
    a.add_argument("--n", type=int, default=500, help="number of images sampled per cell for FID / precision / recall")
    a.add_argument("--sampler", choices=list(SAMPLERS), default="ddpm", help="sampler of those images (ddpm: ancestral, Algorithm 2)")
    a.add_argument("--steps", type=int, default=None, help="number of sampling steps (default: all T steps)")
    a.add_argument("--nll-n", type=int, default=100, help="held-out images in the bits/dim estimate (the bound costs T network calls each)")
    a.add_argument("--features", choices=("digits", "inception"), default="digits", help="feature network of FID: digits (8x8 digits) or inception")
    a.add_argument("--ref", default=None, help="reference of FID (default: the test split of --data)")
    a.add_argument("--batch-size", type=int, default=250, help="images per sampling / NLL batch")
    a.add_argument("--seed", type=int, default=0, help="seed of the sampling and of the NLL's noise")
    a.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    add_cache_dir(a)
    a.add_argument("--reuse", action="store_true", help="keep cells already trained in OUT/cells with the same config; train the rest")
    a.add_argument("--force", action="store_true", help="retrain every cell and overwrite the report")
    a.add_argument("--quiet", action="store_true", help="no progress bars")
    a.set_defaults(func=run_ddpm)


def _cell_overrides(items: list[str]) -> dict[str, tuple[str, ...]]:
    from difflab.errors import UserError

    out: dict[str, list[str]] = {}
    for item in items:
        cell, sep, kv = item.partition(":")
        if not sep or "=" not in kv or not cell:
            raise UserError(f"--cell-set expects CELL:KEY=VALUE (e.g. eps-simple:train.lr=1e-4); got '{item}'")
        out.setdefault(cell.strip(), []).append(kv.strip())
    return {k: tuple(v) for k, v in out.items()}


def run_ddpm(args: argparse.Namespace) -> int:
    from difflab.experiments.ablation import AblationRequest, run_ablation

    set_threads(args.threads)
    cells = tuple(c.strip() for c in args.cells.split(",") if c.strip())
    req = AblationRequest(out=args.out, data=args.data, train_steps=args.train_steps, base=args.base, overrides=tuple(args.overrides),
                          cell_overrides=_cell_overrides(args.cell_overrides), cells=cells, n=args.n, sampler=args.sampler,
                          steps=args.steps, nll_n=args.nll_n, features=args.features, ref=args.ref,
                          batch_size=args.batch_size, seed=args.seed, cache_dir=str(cache_dir(args)),
                          force=args.force, reuse=args.reuse)
    run_ablation(req, progress=not args.quiet)
    print((args.out / "ablation.md").read_text())
    return 0
