"""`difflab interpolate`: a strip of images along the spherical path between two latents x_T (DDIM, eta = 0)."""

from __future__ import annotations

import argparse
from pathlib import Path

from difflab.cli.options import add_device
from difflab.samplers import SPACINGS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("interpolate", help="interpolate between two latents (seeds or inverted images)",
                       description="Decode slerp(z_A, z_B, alpha) with deterministic DDIM. z comes from two seeds, or from "
                                   "DDIM inversion of two images of a data set (--data digits:test --index I J).")
    p.add_argument("--run", required=True, type=Path, help="run folder or checkpoint")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--seeds", type=int, nargs=2, metavar=("A", "B"), help="seeds of the two latents x_T")
    src.add_argument("--data", help="data spec whose images are inverted to latents, e.g. digits:test (with --index)")
    p.add_argument("--index", type=int, nargs=2, metavar=("I", "J"), default=(0, 1), help="indices of the two images in --data")
    p.add_argument("--frames", type=int, default=9, help="number of images along the path (>= 2)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (inversion and decoding)")
    p.add_argument("--spacing", choices=list(SPACINGS), default="leading", help="how the steps are spread over 0..T-1")
    p.add_argument("--class", dest="label", type=int, default=None, help="class label for a class-conditional model")
    add_device(p)
    p.add_argument("--out", required=True, type=Path, help="a file: the .png strip to write")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from difflab.data import load_dataset, parse_data_spec, save_image_grid
    from difflab.errors import UserError
    from difflab.samplers import ddim, invert, prior_sample, select_steps, slerp
    from difflab.runs import DIFFUSION_KINDS, load_run

    if args.frames < 2:
        raise UserError(f"--frames must be at least 2; got {args.frames}")
    if args.out.suffix != ".png":
        raise UserError(f"--out must be a .png file; got {args.out.name}")
    if args.out.exists() and not args.force:
        raise UserError(f"{args.out} exists; choose another --out or add --force to overwrite it")
    from difflab.training.dist import resolve_device

    device = resolve_device(args.device)
    run_ = load_run(args.run, kind=DIFFUSION_KINDS, device=device)
    den, m = run_.denoiser, run_.cfg.model
    p = den.process
    if not 1 <= args.steps <= p.T:
        raise UserError(f"--steps must be between 1 and T={p.T}; got {args.steps}")
    try:
        steps = select_steps(p, args.steps, args.spacing)
    except ValueError as e:
        raise UserError(f"--spacing: {e}") from None
    shape = (1, m.in_channels, m.image_size, m.image_size)
    y = None
    if m.num_classes is not None:
        y = torch.tensor([args.label if args.label is not None else 0])
    if args.seeds is not None:
        z0, z1 = (prior_sample(p, shape, torch.Generator().manual_seed(seed), dtype=torch.float32) for seed in args.seeds)
    else:
        data = load_dataset(parse_data_spec(args.data))
        n = data.x.shape[0]
        if not all(0 <= i < n for i in args.index):
            raise UserError(f"--index must be in 0..{n - 1} for {args.data}; got {list(args.index)}")
        if tuple(data.x.shape[1:]) != shape[1:]:
            raise UserError(f"{args.data} images are {tuple(data.x.shape[1:])} but the model makes {shape[1:]}")
        x = data.x[list(args.index)]
        yy = y.expand(2) if y is not None else None
        z = invert(den, x.to(device), steps, None if yy is None else yy.to(device)).cpu()
        z0, z1 = z[:1], z[1:]
    alphas = torch.linspace(0, 1, args.frames)
    z = torch.cat([slerp(z0, z1, float(a)) for a in alphas])
    frames = ddim(den, z.to(device), steps, y=None if y is None else y.expand(args.frames).to(device)).cpu()
    save_image_grid(frames.clamp(-1, 1), args.out, nrow=args.frames)
    print(f"wrote {args.frames} frames to {args.out}")
    return 0
