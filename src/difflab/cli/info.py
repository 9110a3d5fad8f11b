"""`difflab model`, `difflab config` and `difflab samplers`: what a name or file resolves to."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="print a network's architecture and parameter count", description="Architecture summary of a preset, config or run.")
    p.add_argument("spec", metavar="NAME|PATH", help="network or run preset (e.g. digits, ddpm-cifar10, adm-imagenet64, dit-xl-2, digits-dit, digits-vae, digits-dcgan, digits-clf), JSON config, or run folder")
    p.set_defaults(func=run_model)

    p = sub.add_parser("config", help="print a fully resolved run config", description="Print the resolved run config as JSON, or document every key.")
    p.add_argument("spec", metavar="NAME|PATH", nargs="?", default="digits", help="run preset of any kind (digits, digits-cond, digits-vae, digits-dcgan, digits-clf, ...), JSON file or run folder")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a key (repeatable)")
    p.add_argument("--keys", action="store_true", help="list every config key with its type, value and meaning")
    p.set_defaults(func=run_config)

    p = sub.add_parser("samplers", help="list the samplers", description="Every registered sampler with its network evaluations per step.")
    p.set_defaults(func=run_samplers)


def model_summary(spec: str) -> str:
    """The architecture and parameter count of a network preset (e.g. ddpm-cifar10) or of the network of a run preset,
    JSON config or run folder of any kind."""
    from difflab.configs import to_dict
    from difflab.nets import DIT_PRESETS, UNET_PRESETS, DiTConfig, summarize_dit, summarize_unet, unet_preset
    from difflab.runs import PRESET_KINDS, kind_of_config, resolve_config

    if spec in UNET_PRESETS and spec not in PRESET_KINDS:
        return summarize_unet(unet_preset(spec))
    if spec in DIT_PRESETS and spec not in PRESET_KINDS:
        return summarize_dit(spec)
    path = Path(spec)
    if path.is_file():
        data = json.loads(path.read_text()) if path.suffix == ".json" else None
        if isinstance(data, dict) and "model" not in data:  # a network config on its own, not a run config
            from difflab.configs import from_dict
            from difflab.nets import UNetConfig

            return summarize_unet(from_dict(UNetConfig, data))
    cfg = resolve_config(spec)
    if cfg.kind == "diffusion":
        return summarize_unet(cfg.model)
    if isinstance(cfg.model, DiTConfig):
        return summarize_dit(cfg.model)
    model = kind_of_config(cfg).build_model(cfg)
    m = cfg.model
    settings = ", ".join(f"{k} {v}" for k, v in to_dict(m).items() if k not in ("image_size", "in_channels"))
    lines = [f"{cfg.kind.upper()}: {m.in_channels}x{m.image_size}x{m.image_size}; {settings}"]
    for name, child in model.named_children():
        lines.append(f"  {name:<14}{sum(p.numel() for p in child.parameters()):>12,} parameters")
    total = sum(p.numel() for p in model.parameters())
    lines.append(f"  parameters: {total:,} ({total / 1e6:.1f} M)")
    return "\n".join(lines)


def run_model(args: argparse.Namespace) -> int:
    print(model_summary(args.spec))
    return 0


def run_config(args: argparse.Namespace) -> int:
    from difflab.configs import describe, flatten_dict, to_dict
    from difflab.runs import resolve_config

    cfg = resolve_config(args.spec, args.overrides)
    if not args.keys:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    flat = flatten_dict(to_dict(cfg))
    for key, typ, doc in describe(type(cfg)):
        print(f"{key} = {json.dumps(flat[key])}  ({typ})\n    {doc}")
    return 0


def run_samplers(args: argparse.Namespace) -> int:
    from difflab.samplers import sampler_table

    rows = sampler_table()
    print(f"{'name':<10} {'NFE/step':>8} {'stochastic':>10} {'steps':>6} {'spacing':<12} {'NFE':>5} {'guidance':>8}  summary")
    for r in rows:
        print(f"{r['name']:<10} {r['nfe_per_step']:>8} {str(r['stochastic']).lower():>10} {r['steps']:>6} "
              f"{r['spacing']:<12} {'adapt' if r['nfe'] is None else r['nfe']:>5} {'yes' if r['guidance'] else 'no':>8}  {r['summary']}")
        if r["options"]:
            print(f"{'':<12}options: " + ", ".join(f"{k}={v}" for k, v in r["options"].items()))
    print("\nsteps, spacing and NFE: the recommended settings (with the default options), checked on the Gaussian-mixture oracle "
          "(docs/samplers.md); set an option with --sampler-opt KEY=VALUE")
    return 0
