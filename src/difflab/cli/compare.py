"""`difflab compare`: seed 000's experiment — diffusion vs DCGAN vs VAE: the metrics table, loss curves, samples, trilemma."""

from __future__ import annotations

import argparse
from pathlib import Path

from difflab.cli.options import add_cache_dir, cache_dir, set_threads
from difflab.samplers import SAMPLERS


def _int_list(text: str) -> tuple[int, ...]:
    from difflab.errors import UserError

    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"expected comma-separated integers such as 5,10,25,50; got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare diffusion, DCGAN and VAE runs: precision, recall, FID, KID, loss curves, trilemma",
                       description="Seed 000's comparison. Either --runs (trained runs of any kind) or --data with --budget "
                                   "(train a diffusion model, a VAE and a DCGAN with the same wall-clock budget first, into OUT/runs/).")
    p.add_argument("--runs", nargs="+", default=None, metavar="DIR", help="run folders to compare (diffusion, vae, dcgan)")
    p.add_argument("--data", default=None, help="with --budget: the training data of all three models, name[:split] (e.g. digits:train)")
    p.add_argument("--budget", type=float, default=None, metavar="MINUTES", help="with --data: training minutes per model, of --clock")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="with --budget: 'wall' (wall-clock, the default) or 'cpu' (this process's CPU time: fair on a machine shared with other jobs)")
    p.add_argument("--out", required=True, type=Path, help="a folder: the report, table.md, compare.json, trilemma.md, losses.png, samples.png, trilemma.png")
    p.add_argument("--features", choices=("digits", "inception"), default="digits", help="feature network of the metrics: digits (8x8 digits) or inception")
    p.add_argument("--ref", default=None, help="reference images or stats (default: the test split of --data, else digits:test)")
    p.add_argument("--n", type=int, default=1000, help="number of images sampled per model and per trilemma point")
    p.add_argument("--sampler", choices=list(SAMPLERS), default=None, help="diffusion sampler (default: each run's sample.sampler)")
    p.add_argument("--steps", type=int, default=None, help="diffusion sampling steps of the table (default: each run's sample.steps)")
    p.add_argument("--trilemma-steps", default="5,10,25,50,100", metavar="K,K,...",
                   help="diffusion step counts of the trilemma (default 5,10,25,50,100)")
    p.add_argument("--curve", action="store_true", help="also score every kept checkpoint: FID and recall against training time "
                                                         "(curve.md, curve.png); with --budget, 8 checkpoints per run are kept")
    p.add_argument("--batch-size", type=int, default=256, help="images per sampling batch, the same for every model")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads for training and sampling (default: torch's)")
    add_cache_dir(p)
    p.add_argument("--force", action="store_true", help="overwrite a report (and with --budget, runs) already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from difflab.errors import UserError
    from difflab.experiments.budget import BUDGET_RUNS, train_with_budget
    from difflab.experiments.compare import REPORT_FILES, CompareRequest, compare

    trilemma_steps = _int_list(args.trilemma_steps)
    if any(k < 1 for k in trilemma_steps) or args.n < 2 or args.batch_size < 1 or (args.steps is not None and args.steps < 1):
        raise UserError(f"--trilemma-steps and --steps must be positive, --n at least 2, --batch-size at least 1; "
                        f"got {args.trilemma_steps}, {args.steps}, {args.n}, {args.batch_size}")
    if args.runs and (args.budget is not None or args.data is not None):
        raise UserError("give --runs (compare trained runs) or --data with --budget (train them first), not both")
    if not args.runs and (args.budget is None or args.data is None):
        raise UserError("give --runs DIR ... to compare trained runs, or --data NAME --budget MINUTES to train them first")
    if args.budget is not None and not args.budget > 0:
        raise UserError(f"--budget must be a positive number of minutes; got {args.budget:g}")
    set_threads(args.threads)
    if not args.force and any((args.out / f).exists() for f in REPORT_FILES):
        raise UserError(f"{args.out} already holds a comparison report; add --force to overwrite it or choose another --out")
    cache = str(cache_dir(args))
    runs, budget = args.runs, {}
    ref = args.ref or (f"{args.data.rpartition(':')[0] or args.data}:test" if args.data else "digits:test")
    if args.budget is not None:
        from difflab.eval.sources import parse_feature_source
        from difflab.experiments.scoring import METRICS
        from difflab.pipelines.evaluate import build_extractor, check_enough_for_fid

        parse_feature_source(args.features)  # fail before training on a bad --features
        if args.features == "digits":  # ... or when the digits classifier cannot be built, or --n is too small for it
            check_enough_for_fid(METRICS, build_extractor("digits", cache_dir=cache), args.n, "samples (--n)", fix="Raise --n")
        runs_dir = args.out / "runs"
        print(f"training {', '.join(BUDGET_RUNS)} on {args.data} for {args.budget:g} min ({args.clock} clock) each -> {runs_dir}")
        facts = train_with_budget(args.data, 60 * args.budget, runs_dir, clock=args.clock, checkpoints=8 if args.curve else 0,
                                  force=args.force, progress=not args.quiet)
        runs = [str(runs_dir / name) for name in BUDGET_RUNS]
        budget = {"budget_minutes": args.budget, "clock": args.clock, "data": args.data, "runs": facts}
    req = CompareRequest(runs=tuple(runs), out=args.out, features=args.features, ref=ref, n=args.n, sampler=args.sampler, steps=args.steps,
                         trilemma_steps=trilemma_steps, batch_size=args.batch_size, seed=args.seed, cache_dir=cache,
                         force=args.force, budget=budget, curve=args.curve)
    compare(req, progress=not args.quiet)
    print((args.out / "table.md").read_text())
    print(f"wrote {', '.join(REPORT_FILES)} to {args.out}")
    return 0
