"""`difflab inpaint | denoise | img2img | restore`: restoration with a trained run (docs/restoration.md).

inpaint, denoise and img2img work with any ordinary run (RePaint, denoising from the matching step, SDEdit); restore
samples an image-conditional run (condition.kind sr, colorize or inpaint). Each writes OUT.png, a grid with one row
[input | output | target] per image (no target for an --image), and OUT.npz with the same images (arr_0 the outputs).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from difflab.cli.options import add_device, add_sampler_args, parse_key_values
from difflab.samplers import SPACINGS


def _common(p: argparse.ArgumentParser, *, default_n: int = 16) -> None:
    p.add_argument("--run", required=True, type=Path, help="run folder (newest checkpoint) or a step-N.safetensors file")
    p.add_argument("--image", type=Path, default=None, help="an image file (PNG, JPEG) of the model's size and channels")
    p.add_argument("--data", default=None, help="a data set, name[:split] (e.g. digits:test): its first --n images are the targets")
    p.add_argument("--n", type=int, default=default_n, help=f"number of images from --data, or of samples of one --image (default {default_n})")
    p.add_argument("--seed", type=int, default=0, help="seed of all randomness (masks, added noise, samplers)")
    p.add_argument("--batch-size", type=int, default=256, help="images per network batch")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    add_device(p)
    p.add_argument("--out", required=True, type=Path, help="a file name: OUT.png (grid) and OUT.npz (arrays) are both written; give either")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")


def _class(p: argparse.ArgumentParser) -> None:
    p.add_argument("--class", dest="label", default=None,
                   help="class-conditional runs: a label K for every image, or 'data' for the labels of --data; default the null label "
                        "(a run trained with label dropout), i.e. restoration from the image alone")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inpaint", help="fill a masked region with an ordinary run (RePaint)",
                       description="RePaint (Lugmayr et al. 2022): the known region re-noised to every step and pasted in, with resampling jumps.")
    _common(p)
    p.add_argument("--mask", default="center", help="center (middle square), left (left half), random (a random rectangle per image), or an "
                                                    "image file of the model's size: white = known, black = to fill (default center)")
    p.add_argument("--steps", type=int, default=50, help="timesteps of the respaced chain (linspace; default 50)")
    p.add_argument("--jump-length", type=int, default=10, help="RePaint's jump length j: steps climbed back per resampling (default 10)")
    p.add_argument("--jump-n-sample", type=int, default=10, help="RePaint's r: passes over each stretch of j steps; 1 = no resampling (default 10)")
    _class(p)
    p.set_defaults(func=run_inpaint)

    p = sub.add_parser("denoise", help="denoise images with a known noise level",
                       description="Start the reverse process at the step whose noise matches --noise-sigma (after scaling) and run it to clean data.")
    _common(p)
    p.add_argument("--noise-sigma", type=float, required=True, help="std of the Gaussian noise on the [-1, 1] pixel scale (value / 127.5 for 0..255 "
                                                                    "pixels); --image is taken as already noisy, --data is noised here (with --seed)")
    p.add_argument("--method", choices=("sample", "mean"), default="sample", help="'sample': run the sampler (a posterior sample); "
                                                                                  "'mean': one network evaluation, the posterior mean E[x_0 | x_t]")
    add_sampler_args(p, sampler_default="ddpm", steps_default=50, spacing=False, what=" (for --method sample; steps from the matching timestep down to 0)")
    _class(p)
    p.set_defaults(func=run_denoise)

    p = sub.add_parser("img2img", help="image-to-image editing (SDEdit)",
                       description="SDEdit (Meng et al. 2022): noise the input to t = strength * T and denoise it with a sampler.")
    _common(p)
    p.add_argument("--strength", type=float, required=True, help="in [0, 1]: 0 returns the input, 1 ignores it (a plain sample)")
    add_sampler_args(p, sampler_default="ddim", steps_default=50, spacing=False, what=" (steps from t = strength * T down to 0)")
    _class(p)
    p.set_defaults(func=run_img2img)

    p = sub.add_parser("restore", help="restore images with an image-conditional run (sr, colorize, inpaint)",
                       description="Sample x ~ p(x | y) from a run trained with condition.kind sr, colorize or inpaint. With --data the targets "
                                   "are degraded here and the output is scored against a trivial baseline; --image is the observation "
                                   "itself (the low-resolution image for sr, a grayscale image for colorize, the image to fill for inpaint).")
    _common(p)
    p.add_argument("--mask", default=None, help="inpainting runs: center, left, random or an image file (white = known); default the run's condition.mask")
    add_sampler_args(p, spacing=False)
    p.add_argument("--spacing", choices=list(SPACINGS), default=None, help="how the steps are spread over 0..T-1; default: the run's sample.spacing")
    _class(p)
    p.set_defaults(func=run_restore)


def _device(args: argparse.Namespace) -> str:
    from difflab.training.dist import resolve_device

    return str(resolve_device(args.device))


def _options(args: argparse.Namespace) -> dict:
    return parse_key_values(args.sampler_opts, "--sampler-opt")


def _ordinary_run(args: argparse.Namespace, command: str):
    """What inpaint, denoise and img2img do first: check the outputs, load an ordinary run, its inputs and labels.
    Returns (png, npz, device, run, inputs, labels)."""
    from difflab.pipelines.restore import check_outputs, class_labels, load_inputs, load_restoration_run

    png, npz = check_outputs(args.out, args.force)
    dev = _device(args)
    run = load_restoration_run(args.run, conditional=False, command=command, device=dev, ema=not args.no_ema)
    inputs = load_inputs(run, args.image, args.data, args.n)
    return png, npz, dev, run, inputs, class_labels(run, len(inputs.x), args.label, inputs.labels)


def _generator(seed: int):
    import torch

    return torch.Generator().manual_seed(seed)


def _report(png: Path, npz: Path, n: int, seconds: float, scores: dict[str, float] | None = None, extra: str = "") -> None:
    print(f"{extra}time: {seconds:.1f}s")
    if scores:
        print("  ".join(f"{k}: {v:.4f}" for k, v in scores.items()))
    print(f"wrote {n} rows to {png} and {npz}")


def run_inpaint(args: argparse.Namespace) -> int:
    from difflab.restoration import make_masks, psnr, repaint_nfe
    from difflab.pipelines.restore import inpaint_images, write_rows

    png, npz, dev, run, inputs, labels = _ordinary_run(args, "inpaint")
    g = _generator(args.seed)
    masks = make_masks(args.mask, len(inputs.x), run.cfg.model.image_size, g)
    nfe = repaint_nfe(args.steps, args.jump_length, args.jump_n_sample)
    t0 = time.perf_counter()
    out = inpaint_images(run, inputs.x, masks, labels, n_steps=args.steps, jump_length=args.jump_length, jump_n_sample=args.jump_n_sample,
                         generator=g, batch_size=args.batch_size, device=dev)
    seconds = time.perf_counter() - t0
    masked = inputs.x * masks
    cols = {"input": masked, "output": out, **({"target": inputs.x} if inputs.from_data else {})}
    write_rows(png, cols, inputs.labels, {"mask": masks})
    scores = None
    if inputs.from_data:
        hole = 1 - masks
        scores = {"psnr_hole": float(psnr(out, inputs.x, hole).mean()), "psnr_hole_masked_input": float(psnr(masked, inputs.x, hole).mean())}
    _report(png, npz, len(out), seconds, scores, f"RePaint: {args.steps} steps, jump length {args.jump_length}, {args.jump_n_sample} passes, NFE per image {nfe}  ")
    return 0


def run_denoise(args: argparse.Namespace) -> int:
    import torch

    from difflab.restoration import check_noise_sigma, matching_step, psnr
    from difflab.pipelines.restore import denoise_images, write_rows

    check_noise_sigma(args.noise_sigma)
    png, npz, dev, run, inputs, labels = _ordinary_run(args, "denoise")
    t = matching_step(run.denoiser.process, args.noise_sigma)
    g = _generator(args.seed)
    noisy = inputs.x + args.noise_sigma * torch.randn(inputs.x.shape, generator=g) if inputs.from_data else inputs.x
    t0 = time.perf_counter()
    out = denoise_images(run, noisy, args.noise_sigma, labels, sampler=args.sampler, n_steps=args.steps, method=args.method, generator=g,
                         batch_size=args.batch_size, device=dev, sampler_options=_options(args))
    seconds = time.perf_counter() - t0
    cols = {"input": noisy, "output": out, **({"target": inputs.x} if inputs.from_data else {})}
    write_rows(png, cols, inputs.labels)
    scores = {"psnr": float(psnr(out, inputs.x).mean()), "psnr_noisy_input": float(psnr(noisy, inputs.x).mean())} if inputs.from_data else None
    _report(png, npz, len(out), seconds, scores, f"start step t = {t} (sigma_t >= {args.noise_sigma:g}), method {args.method}  ")
    return 0


def run_img2img(args: argparse.Namespace) -> int:
    from difflab.restoration import check_strength, strength_step
    from difflab.pipelines.restore import img2img_images, write_rows

    check_strength(args.strength)
    png, npz, dev, run, inputs, labels = _ordinary_run(args, "img2img")
    t0 = time.perf_counter()
    out = img2img_images(run, inputs.x, args.strength, labels, sampler=args.sampler, n_steps=args.steps, generator=_generator(args.seed),
                         batch_size=args.batch_size, device=dev, sampler_options=_options(args))
    seconds = time.perf_counter() - t0
    write_rows(png, {"input": inputs.x, "output": out}, inputs.labels)
    _report(png, npz, len(out), seconds, None, f"SDEdit from t = {strength_step(run.denoiser.process.T, args.strength)}  ")
    return 0


def run_restore(args: argparse.Namespace) -> int:
    from difflab.restoration import build_degradation
    from difflab.pipelines.restore import (
        check_outputs,
        class_labels,
        load_inputs,
        load_restoration_run,
        observation_shape,
        observations,
        restoration_scores,
        restore_images,
        write_rows,
    )

    png, npz = check_outputs(args.out, args.force)
    dev = _device(args)
    run = load_restoration_run(args.run, conditional=True, command="restore", device=dev, ema=not args.no_ema)
    cfg = run.cfg
    c, s = observation_shape(run)
    inputs = load_inputs(run, args.image, args.data, args.n, size=s, channels=c)
    labels = class_labels(run, len(inputs.x), args.label, inputs.labels) if cfg.model.num_classes is not None or args.label else None
    g = _generator(args.seed)
    obs, masks = observations(run, inputs, args.mask, g)
    t0 = time.perf_counter()
    out = restore_images(run, obs, labels, sampler=args.sampler, n_steps=args.steps, spacing=args.spacing, generator=g,
                         batch_size=args.batch_size, device=dev, sampler_options=_options(args))
    seconds = time.perf_counter() - t0
    deg = build_degradation(cfg.condition, cfg.data_channels)
    cols = {"input": deg.show(obs), "output": out, **({"target": inputs.x} if inputs.from_data else {})}
    write_rows(png, cols, inputs.labels, {"baseline": deg.baseline(obs).clamp(-1, 1), **({"mask": masks} if masks is not None else {})})
    scores = None
    if inputs.from_data:
        scores = restoration_scores(cfg.condition.kind, out, inputs.x, deg.baseline(obs).clamp(-1, 1), None if masks is None else 1 - masks)
    _report(png, npz, len(out), seconds, scores, f"condition: {cfg.condition.kind}  ")
    return 0
