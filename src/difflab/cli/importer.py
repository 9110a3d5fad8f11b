"""`difflab import guided-diffusion | improved-diffusion | dit`: turn a released checkpoint (.pt) of openai/guided-diffusion
(Dhariwal & Nichol 2021), openai/improved-diffusion (Nichol & Dhariwal 2021) or facebookresearch/DiT (Peebles & Xie 2023)
into a difflab run folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="import a checkpoint of another codebase as a run folder",
                       description="Import released checkpoints of other codebases as difflab run folders (docs/import.md).")
    actions = p.add_subparsers(dest="source", metavar="SOURCE", required=True)
    g = actions.add_parser(
        "guided-diffusion", help="an openai/guided-diffusion .pt (ADM model or noise-aware classifier)",
        description="Check a guided-diffusion state dict against a difflab preset (every key and shape) and write a run folder "
                    "that `difflab sample --run` (model) or `--classifier` (classifier) accepts. Released file names select "
                    "their preset, kind and noise schedule; see docs/import.md.",
    )
    g.add_argument("--checkpoint", required=True, type=Path, help="the .pt file, e.g. 64x64_diffusion.pt (loaded with weights_only=True)")
    g.add_argument("--preset", default=None, help="difflab preset of the network, e.g. adm-imagenet64 or adm-imagenet64-clf; "
                                                  "default: the release's with this file name")
    g.add_argument("--kind", choices=("model", "classifier"), default=None, help="diffusion model or noise-aware classifier; default: the release's, else model")
    g.add_argument("--out", required=True, type=Path, help="a folder: the run to write (config.json, checkpoints/step-0.*)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the run config, e.g. --set process.schedule=cosine or --set model.dropout=0 (repeatable)")
    g.add_argument("--force", action="store_true", help="replace a run already in --out")
    g.set_defaults(func=run)

    i = actions.add_parser(
        "improved-diffusion", help="an openai/improved-diffusion .pt (improved DDPM model, e.g. cifar10_uncond_50M_500K.pt)",
        description="Check an improved-diffusion state dict against the flags of its release (every key and shape) and write "
                    "a run folder that `difflab sample --run`, `difflab nll` and `difflab eval` accept. Released file names "
                    "select their preset (architecture, T, schedule, rescaled timesteps); see docs/import.md.",
    )
    i.add_argument("--checkpoint", required=True, type=Path, help="the .pt file, e.g. cifar10_uncond_50M_500K.pt (loaded with weights_only=True)")
    i.add_argument("--preset", default=None, help="the release's flags, e.g. iddpm-cifar10 or iddpm-imagenet64-cond; "
                                                  "default: the release's with this file name")
    i.add_argument("--out", required=True, type=Path, help="a folder: the run to write (config.json, checkpoints/step-0.*)")
    i.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the run config, e.g. --set model.num_heads=1 or --set process.schedule=linear (repeatable)")
    i.add_argument("--force", action="store_true", help="replace a run already in --out")
    i.set_defaults(func=run_improved)

    t = actions.add_parser(
        "dit", help="a facebookresearch/DiT .pt (e.g. DiT-XL-2-256x256.pt): a diffusion transformer on VAE latents",
        description="Check a DiT state dict against a DiT preset (every key and shape; a file of another size says which it "
                    "looks like) and write a run folder that samples with DiT's VP linear schedule (T=1000, learned sigma); "
                    "see docs/dit.md.",
    )
    t.add_argument("--checkpoint", required=True, type=Path, help="the .pt file, e.g. DiT-XL-2-256x256.pt (loaded with weights_only=True)")
    t.add_argument("--preset", default=None, help="the DiT size, e.g. dit-xl-2 or dit-b-4; default: the release's with this "
                                                  "file name, else the one size its shapes fit")
    t.add_argument("--out", required=True, type=Path, help="a folder: the run to write (config.json, checkpoints/step-0.*)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the run config, e.g. --set sample.steps=50 or --set model.depth=12 (repeatable)")
    t.add_argument("--autoencoder", type=Path, default=None, metavar="RUN",
                   help="an autoencoder run whose decoder turns the sampled latents into images (DiT's: sd-vae-ft-mse, imported "
                        "with `difflab import diffusers-vae DIR --out RUN`); default: the run samples latents")
    t.add_argument("--force", action="store_true", help="replace a run already in --out")
    t.set_defaults(func=run_dit)

    d = actions.add_parser(
        "diffusers", help="a diffusers UNet2DModel / DDPM pipeline folder (e.g. a local copy of google/ddpm-cifar10-32)",
        description="Read a diffusers pipeline folder (unet/config.json + unet/diffusion_pytorch_model.safetensors, "
                    "scheduler/scheduler_config.json) and write a difflab run folder. Weights are read from safetensors only; "
                    "a config field difflab cannot honour is an error (docs/import.md).",
    )
    d.add_argument("folder", type=Path, metavar="DIR", help="the diffusers folder (or a bare UNet2DModel folder: DDPM's default scheduler)")
    d.add_argument("--out", required=True, type=Path, help="a folder: the run to write (config.json, checkpoints/step-0.*)")
    d.add_argument("--force", action="store_true", help="replace a run already in --out")
    d.set_defaults(func=run_diffusers)

    v = actions.add_parser(
        "diffusers-vae", help="a diffusers AutoencoderKL folder (e.g. a local copy of stabilityai/sd-vae-ft-mse): an autoencoder run",
        description="Read a diffusers AutoencoderKL folder (config.json + diffusion_pytorch_model.safetensors, or a pipeline folder's "
                    "vae/) and write an autoencoder run folder, the first stage of latent runs (latent.autoencoder; docs/latent.md). "
                    "Weights are read from safetensors only; a config field difflab cannot honour is an error.",
    )
    v.add_argument("folder", type=Path, metavar="DIR", help="the diffusers AutoencoderKL folder")
    v.add_argument("--out", required=True, type=Path, help="a folder: the run to write (config.json, checkpoints/step-0.*)")
    v.add_argument("--force", action="store_true", help="replace a run already in --out (validated first; the old run is kept until the new one is written)")
    v.set_defaults(func=run_diffusers_vae)


def run(args: argparse.Namespace) -> int:
    from difflab.interop import import_checkpoint
    from difflab.runs import run_kind

    out = import_checkpoint("guided-diffusion", args.checkpoint, args.out, preset=args.preset, kind=args.kind, overrides=args.overrides,
                            force=args.force)
    is_classifier = run_kind(out) == "classifier"
    use = f"difflab sample --guidance classifier --classifier {out} ..." if is_classifier else f"difflab sample --run {out} --out samples.png"
    print(f"imported {args.checkpoint.name} -> {out}  (use: {use})")
    return 0


def run_improved(args: argparse.Namespace) -> int:
    from difflab.interop import import_checkpoint

    out = import_checkpoint("improved-diffusion", args.checkpoint, args.out, preset=args.preset, overrides=args.overrides, force=args.force)
    print(f"imported {args.checkpoint.name} -> {out}  (use: difflab sample --run {out} --out samples.png, difflab nll --run {out} ...)")
    return 0


def run_dit(args: argparse.Namespace) -> int:
    from difflab.interop import import_checkpoint

    out = import_checkpoint("dit", args.checkpoint, args.out, preset=args.preset, overrides=args.overrides, autoencoder=args.autoencoder,
                            force=args.force)
    from difflab.runs import resolve_config

    cfg = resolve_config(out)
    latents = not cfg.latent.enabled and cfg.model.in_channels not in (1, 3)
    note = "; it samples latents: import again with --autoencoder RUN to decode them into images" if latents else ""
    print(f"imported {args.checkpoint.name} -> {out}  (use: difflab sample --run {out} --out samples.png{note})")
    return 0


def run_diffusers(args: argparse.Namespace) -> int:
    from difflab.interop.diffusers_folder import import_diffusers

    out = import_diffusers(args.folder, args.out, force=args.force)
    print(f"imported {args.folder} -> {out}  (use: difflab sample --run {out} --out samples.png)")
    return 0


def run_diffusers_vae(args: argparse.Namespace) -> int:
    from difflab.interop.diffusers_vae import import_diffusers_vae

    out = import_diffusers_vae(args.folder, args.out, force=args.force)
    print(f"imported {args.folder} -> {out}  (use: difflab train --config digits32-latent --set latent.autoencoder={out} ...)")
    return 0
