"""`difflab sample`: draw images from a trained run with any registered sampler, optionally guided; write a PNG grid or an .npz."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="sample images from a trained run", description="Sample from a run folder or checkpoint.")
    p.add_argument("--run", required=True, type=Path, help="run folder (newest checkpoint) or a step-N.safetensors file")
    p.add_argument("--sampler", default=None, help="sampler name (see `difflab samplers`); default: the run's sample.sampler")
    p.add_argument("--steps", type=int, default=None, help="number of sampling steps; default: the run's sample.steps")
    p.add_argument("--spacing", default=None, help="timestep spacing: leading, trailing, linspace, quadratic, karras, logsnr, logsnr-jump, "
                                                   "or searched (found for this model and sampler first; docs/samplers.md); default: the run's")
    p.add_argument("--timesteps", default=None, metavar="LIST|FILE.json",
                   help="visit exactly these timesteps, e.g. 999,600,0 or a JSON list (what --spacing searched prints); replaces --steps/--spacing")
    p.add_argument("--search-batch", type=int, default=256, help="--spacing searched: number of x_T the schedule is searched on")
    p.add_argument("--eta", type=float, default=None, help="DDIM noise (0 deterministic, 1 DDPM-like); default: the run's")
    p.add_argument("--n", type=int, default=64, help="number of images")
    p.add_argument("--batch-size", type=int, default=256, help="images per network batch")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial noise and of stochastic samplers")
    p.add_argument("--class", dest="label", type=int, default=None, help="class label for a class-conditional model or for guidance (default: cycle through classes)")
    p.add_argument("--guidance", choices=("none", "classifier", "cfg"), default="none",
                   help="'classifier': ADM classifier guidance with --classifier (Dhariwal & Nichol 2021); 'cfg': classifier-free guidance "
                        "of a model trained with label dropout (Ho & Salimans 2022); see docs/guidance.md for which samplers take which")
    p.add_argument("--scale", type=float, default=None, help="guidance scale: s of classifier guidance, w of cfg (eps = (1+w) eps_cond - w eps_null); default 1")
    p.add_argument("--classifier", type=Path, default=None, help="noise-aware classifier run folder (from `difflab classifier train`), for --guidance classifier")
    p.add_argument("--base", choices=("auto", "cond", "uncond"), default="auto",
                   help="classifier guidance of the conditional prediction ('cond') or the unconditional one ('uncond': an unconditional "
                        "model, or the null label of a model trained with label dropout); 'auto': cond when the model is class-conditional")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--out", required=True, type=Path, help=".png writes a grid; .npz writes uint8 NHWC images as arr_0 (labels as arr_1)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from difflab.errors import UserError
    from difflab.train.generate import SampleRequest, generate, write_samples

    if args.out.suffix not in (".png", ".npz"):
        raise UserError(f"--out must end in .png (grid) or .npz (arrays); got {args.out.name}")
    if args.out.exists() and not args.force:
        raise UserError(f"{args.out} exists; choose another --out or add --force to overwrite it")
    req = SampleRequest(run=args.run, sampler=args.sampler, steps=args.steps, spacing=args.spacing, eta=args.eta, n=args.n,
                        batch_size=args.batch_size, seed=args.seed, label=args.label, ema=not args.no_ema, device=args.device,
                        guidance=args.guidance, scale=args.scale, classifier=args.classifier, base=args.base,
                        timesteps=args.timesteps, search_batch=args.search_batch)
    result = generate(req, progress=True)
    if result.search_nfe is not None:
        print(f"searched timesteps ({result.search_nfe} NFE per search example): {','.join(map(str, result.timesteps))}  "
              "(reuse them with --timesteps)")
    write_samples(args.out, result.images, result.labels)
    guided = f"  guidance: {result.guidance} scale {result.scale:g}" if result.guidance != "none" else ""
    print(f"sampler: {result.sampler}  steps: {result.steps}  NFE per image: {result.nfe}{guided}  time: {result.seconds:.1f}s")
    print(f"wrote {args.n} samples to {args.out}")
    return 0
