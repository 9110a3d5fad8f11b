"""`difflab sweep guidance`: sample every class at every guidance scale; FID, precision, recall and accuracy per scale."""

from __future__ import annotations

import argparse
from pathlib import Path

from difflab.cli.options import add_cache_dir, add_device, add_sampler_args, cache_dir, parse_key_values
from difflab.samplers import SPACINGS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="measure a trade-off over a parameter sweep (guidance scale)",
                       description="Sweeps that sample a run many times and score each setting.")
    kinds = p.add_subparsers(dest="sweep", metavar="SWEEP", required=True)
    g = kinds.add_parser("guidance", help="FID, precision, recall and class accuracy per guidance scale",
                         description="Sample n images of every class at every scale (same x_T for all scales), score them in an "
                                     "independent feature space (default: the digits feature classifier against digits:test), and "
                                     "write sweep.json, sweep.md (table), sweep.png (plot) and one sample grid per scale to --out.")
    g.add_argument("--run", required=True, type=Path, help="diffusion run folder or checkpoint")
    g.add_argument("--guidance", choices=("classifier", "cfg"), default="classifier", help="which guidance to sweep (default classifier)")
    g.add_argument("--classifier", type=Path, default=None, help="noise-aware classifier run, for --guidance classifier")
    g.add_argument("--base", choices=("auto", "cond", "uncond"), default="auto",
                   help="classifier guidance of the conditional or the unconditional prediction (see `difflab sample --help`)")
    g.add_argument("--scales", default="0,1,2,4,10", help="comma-separated guidance scales (default 0,1,2,4,10)")
    g.add_argument("--per-class", type=int, default=50, help="images of each class at each scale")
    add_sampler_args(g, spacing=False)
    g.add_argument("--spacing", choices=list(SPACINGS), default=None, help="how the steps are spread over 0..T-1; default: the run's sample.spacing")
    g.add_argument("--seed", type=int, default=0, help="seed of x_T and sampler noise (the same at every scale)")
    g.add_argument("--batch-size", type=int, default=250, help="images per network batch")
    g.add_argument("--ref", default="digits:test", help="reference images for FID / precision / recall (default digits:test)")
    g.add_argument("--features", choices=("digits", "inception"), default="digits",
                   help="feature space: digits (its classifier also gives the accuracy) or inception")
    add_cache_dir(g)
    add_device(g)
    g.add_argument("--out", required=True, type=Path, help="a folder: the report (sweep.json, sweep.md, sweep.png, grids/)")
    g.add_argument("--force", action="store_true", help="overwrite a report already in --out")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.set_defaults(func=run_guidance)


def run_guidance(args: argparse.Namespace) -> int:
    from difflab.errors import UserError
    from difflab.experiments.guidance_sweep import SweepRequest, guidance_sweep, markdown_table, parse_scales, write_sweep

    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file; give a folder for the report")
    if (args.out / "sweep.json").exists() and not args.force:
        raise UserError(f"{args.out} already holds a sweep report; choose another --out or add --force to overwrite it")
    req = SweepRequest(run=args.run, scales=parse_scales(args.scales), n=args.per_class, guidance=args.guidance, classifier=args.classifier,
                       base=args.base, sampler=args.sampler, steps=args.steps, spacing=args.spacing,
                       sampler_options=parse_key_values(args.sampler_opts, "--sampler-opt"), seed=args.seed,
                       batch_size=args.batch_size, ref=args.ref, features=args.features, cache_dir=str(cache_dir(args)), device=args.device)
    report = guidance_sweep(req, progress=not args.quiet, grids=args.out / "grids")
    paths = write_sweep(report, args.out)
    print(f"guidance: {args.guidance} (base: {report['base']})  sampler: {report['sampler']} {report['steps']} steps  "
          f"{args.per_class} per class  features: {report['features']} vs {report['ref']}")
    print(markdown_table(report), end="")
    print(f"wrote {paths['json']}, {paths['markdown']}, {paths['plot']}")
    return 0
