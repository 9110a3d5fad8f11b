"""`difflab sample`: draw images from a trained run with any registered sampler, optionally guided; write a PNG grid or an .npz."""

from __future__ import annotations

import argparse
from pathlib import Path

from difflab.cli.options import add_sampling_args, check_out_file, sample_request


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="sample images from a trained run", description="Sample from a run folder or checkpoint "
                       "(diffusion: any sampler, optionally guided; VAE / DCGAN: one pass). The Python twin is difflab.load_run(RUN).sample(...).")
    p.add_argument("--run", required=True, type=Path, help="run folder (newest checkpoint) or a step-N.safetensors file")
    add_sampling_args(p, n_default=64)
    p.add_argument("--out", required=True, type=Path, help="a file: .png writes a grid; .npz writes uint8 NHWC images as arr_0 (labels as arr_1)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from difflab.pipelines.sample import generate, write_samples

    check_out_file(args.out, args.force, (".png", ".npz"))
    result = generate(sample_request(args, run=args.run), progress=not args.quiet)
    if result.search_nfe is not None:
        print(f"searched timesteps ({result.search_nfe} NFE per search example): {','.join(map(str, result.timesteps))}  "
              "(reuse them with --timesteps)")
    write_samples(args.out, result.images, result.labels)
    guided = f"  guidance: {result.guidance} scale {result.scale:g}" if result.guidance != "none" else ""
    opts = "  options: " + ", ".join(f"{k}={v}" for k, v in result.options.items()) if result.options else ""
    print(f"sampler: {result.sampler}  steps: {result.steps}  NFE per image: {result.nfe}{guided}{opts}  time: {result.seconds:.1f}s")
    print(f"wrote {args.n} samples to {args.out}")
    return 0
