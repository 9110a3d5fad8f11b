"""`difflab export diffusers RUN --out DIR`: a diffusion run as a folder that diffusers' DDPMPipeline / DDIMPipeline load."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a run in another codebase's format (diffusers)",
                       description="Hand a trained run to another codebase (docs/import.md).")
    targets = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    d = targets.add_parser(
        "diffusers", help="a diffusers DDPM pipeline folder (unet/ + scheduler/), loadable offline with from_pretrained",
        description="Write RUN as unet/ (UNet2DModel config + diffusion_pytorch_model.safetensors), scheduler/ (DDPMScheduler: "
                    "the run's betas, T, prediction type, variance type, clipping), model_index.json and difflab.json (the run's "
                    "config, so `difflab import diffusers` gives the same run back). A feature diffusers cannot express is a one-line error.",
    )
    d.add_argument("run", type=Path, metavar="RUN", help="a diffusion run folder (newest checkpoint) or a step-N.safetensors file")
    d.add_argument("--out", required=True, type=Path, help="a folder: the pipeline to write")
    d.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA weights")
    d.add_argument("--force", action="store_true", help="write into a non-empty --out (its pipeline files are replaced)")
    d.set_defaults(func=run_diffusers)


def run_diffusers(args: argparse.Namespace) -> int:
    from difflab.interop.diffusers_folder import export_diffusers

    out = export_diffusers(args.run, args.out, force=args.force, ema=not args.no_ema)
    print(f"exported {args.run} -> {out}  (diffusers: DDPMPipeline.from_pretrained({str(out)!r}) or DDIMPipeline)")
    return 0
