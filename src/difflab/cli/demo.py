"""`difflab demo`: the whole loop on the built-in digits in minutes on a CPU — train, sample, plot, evaluate, report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from difflab.cli.options import add_cache_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train, sample, evaluate and report the digits preset on the CPU",
                       description="Train the digits preset (resuming or reusing a finished run in --out), sample, plot, evaluate, and "
                                   "write the report page OUT/report/index.html (difflab report).")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="a folder: the run")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--n", type=int, default=1000, help="number of images sampled for the evaluation")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_cache_dir(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from difflab.experiments.report import ReportRequest, build_report
    from difflab.pipelines.sample import SampleRequest, generate, write_samples
    from difflab.runs import resolve_config, train_run
    from difflab.training.checkpoint import list_checkpoints

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
    evaluate_demo(out, args)
    # OUT/report is the demo's own output: replaced on every run (force), nothing else is touched.
    page = build_report(ReportRequest(runs=(out,), out=out / "report", force=True), log=lambda msg: None if args.quiet else print(msg))
    print(f"report: {page}")
    return 0


def evaluate_demo(out: Path, args: argparse.Namespace, metrics_config=None) -> None:
    """DDIM-50 samples vs digits:test on the digits classifier's features, beside the real-vs-real floor -> eval.json."""
    from difflab.cli.eval import format_table, write_json
    from difflab.cli.options import cache_dir
    from difflab.eval.metrics import MetricsConfig
    from difflab.pipelines.evaluate import EvalRequest, evaluate
    from difflab.pipelines.sample import SampleRequest

    metrics_config = metrics_config or MetricsConfig()
    cache = str(cache_dir(args))
    metrics = ("fid", "precision", "recall", "kid", "is")
    sampling = SampleRequest(sampler="ddim", steps=50, n=args.n, seed=0, batch_size=250)
    model = evaluate(EvalRequest(samples=str(out), ref="digits:test", features="digits", metrics=metrics,
                                 sampling=sampling, batch_size=256, cache_dir=cache, metrics_config=metrics_config),
                     progress=not args.quiet)
    # The floor in the same orientation: real training digits in the place of the samples, against digits:test.
    floor = evaluate(EvalRequest(samples="digits:train", ref="digits:test", features="digits", metrics=metrics,
                                 batch_size=256, cache_dir=cache, metrics_config=metrics_config))
    print(f"\nevaluation: {args.n} DDIM-50 samples vs digits:test")
    print(format_table(model))
    print("\nreal-vs-real floor: digits:train vs digits:test")
    print(format_table(floor))
    write_json(out / "eval.json", {"model": model, "floor": floor})
    print(f"wrote {out / 'eval.json'}")
