"""`difflab model`, `difflab config` and `difflab samplers`: what a name or file resolves to."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="print a network's architecture and parameter count", description="Architecture summary of a preset, config or run.")
    p.add_argument("spec", metavar="NAME|PATH", help="network or run preset (e.g. digits, ddpm-cifar10, adm-imagenet64, digits-vae, digits-dcgan), JSON config, or run folder")
    p.set_defaults(func=run_model)

    p = sub.add_parser("config", help="print a fully resolved run config", description="Print the resolved run config as JSON, or document every key.")
    p.add_argument("spec", metavar="NAME|PATH", nargs="?", default="digits", help="run preset (default digits; also digits-vae, digits-dcgan), JSON file or run folder")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a key (repeatable)")
    p.add_argument("--keys", action="store_true", help="list every config key with its type, value and meaning")
    p.set_defaults(func=run_config)

    p = sub.add_parser("samplers", help="list the samplers", description="Every registered sampler with its network evaluations per step.")
    p.set_defaults(func=run_samplers)


def run_model(args: argparse.Namespace) -> int:
    from difflab.baselines import baseline_kind_of
    from difflab.nets import summarize_unet
    from difflab.train.presets import model_config

    if baseline_kind_of(args.spec) is not None:
        print(summarize_baseline(args.spec))
        return 0
    print(summarize_unet(model_config(args.spec)))
    return 0


def summarize_baseline(spec: str) -> str:
    """The VAE's or DCGAN's config and its parameter count per part (encoder/decoder, generator/discriminator)."""
    from difflab.baselines import build_baseline_model, resolve_baseline_config
    from difflab.configs import to_dict

    cfg = resolve_baseline_config(spec)
    model = build_baseline_model(cfg)
    m = cfg.model
    settings = ", ".join(f"{k} {v}" for k, v in to_dict(m).items() if k not in ("image_size", "in_channels"))
    lines = [f"{cfg.kind.upper()}: {m.in_channels}x{m.image_size}x{m.image_size}; {settings}"]
    for name, child in model.named_children():
        lines.append(f"  {name:<14}{sum(p.numel() for p in child.parameters()):>12,} parameters")
    total = sum(p.numel() for p in model.parameters())
    lines.append(f"  parameters: {total:,} ({total / 1e6:.1f} M)")
    return "\n".join(lines)


def run_config(args: argparse.Namespace) -> int:
    from difflab.baselines import baseline_kind_of, resolve_baseline_config
    from difflab.configs import describe, flatten_dict, to_dict
    from difflab.train.presets import resolve_config

    if baseline_kind_of(args.spec) is not None:  # a VAE or DCGAN preset, config or run
        cfg = resolve_baseline_config(args.spec, args.overrides)
    else:
        cfg = resolve_config(args.spec, args.overrides)
    if not args.keys:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    flat = flatten_dict(to_dict(cfg))
    for key, typ, doc in describe(type(cfg)):
        print(f"{key} = {json.dumps(flat[key])}  ({typ})\n    {doc}")
    return 0


def run_samplers(args: argparse.Namespace) -> int:
    from difflab.samplers import SAMPLERS, count_nfe

    print(f"{'name':<10} {'NFE/step':>8} {'stochastic':>10} {'steps':>6} {'spacing':<12} {'NFE':>5}  summary")
    for s in SAMPLERS.values():
        nfe = count_nfe(s, s.recommended_steps, **dict(s.recommended_options))
        print(f"{s.name:<10} {s.nfe_per_step:>8} {str(s.stochastic).lower():>10} {s.recommended_steps:>6} "
              f"{s.recommended_spacing:<12} {'adapt' if nfe is None else nfe:>5}  {s.summary}")
    print("\nsteps, spacing and NFE: the recommended settings, checked on the Gaussian-mixture oracle (docs/samplers.md)")
    return 0
