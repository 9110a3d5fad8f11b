"""Named run configs (`difflab config NAME`), and resolving a name, a JSON file or a run folder to a RunConfig."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from difflab.configs import from_dict, load_json, replace_key
from difflab.data import DataConfig
from difflab.errors import UserError
from difflab.nets import UNET_PRESETS, unet_preset
from difflab.process import ProcessConfig
from difflab.train.config import RunConfig, SampleConfig, TrainConfig


def _digits() -> RunConfig:
    """The CPU demo: a small U-Net on 8x8 digits, T=1000 linear, eps-prediction, L_simple."""
    return RunConfig(
        data=DataConfig(name="digits", split="train"),
        model=unet_preset("digits"),
        process=ProcessConfig(kind="vp", schedule="linear", T=1000),
        train=TrainConfig(steps=3000, batch_size=128, lr=1e-3, warmup_steps=100, lr_schedule="cosine",
                          ema_rate=0.995, grad_clip=1.0, log_every=50, checkpoint_every=500, sample_every=1000),
        sample=SampleConfig(sampler="ddim", steps=50, grid_size=100),
    )


RUN_PRESETS = {"digits": _digits}


def preset_names() -> list[str]:
    return sorted(RUN_PRESETS)


def resolve_config(spec: str, overrides: list[str] = ()) -> RunConfig:
    """A run preset name, a JSON config file or a run folder, with `key=value` overrides applied in order."""
    if spec in RUN_PRESETS:
        cfg = RUN_PRESETS[spec]()
    else:
        path = Path(spec)
        if path.is_dir():
            path = path / "config.json"
            if not path.exists():
                raise UserError(f"{spec} is a folder without config.json; give a run folder, a JSON file or a preset ({', '.join(preset_names())})")
        elif not path.exists():
            raise UserError(f"unknown config '{spec}': not a preset ({', '.join(preset_names())}) nor an existing JSON file")
        cfg = load_json(RunConfig, path)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects key=value (e.g. train.steps=100); got '{item}'")
        cfg = replace_key(cfg, key.strip(), value.strip())
    return cfg


def model_config(spec: str):
    """A U-Net config from a network preset, a run preset, a JSON file (run or network config) or a run folder."""
    from difflab.nets import UNetConfig

    if spec in UNET_PRESETS and spec not in RUN_PRESETS:
        return unet_preset(spec)
    if spec in RUN_PRESETS:
        return RUN_PRESETS[spec]().model
    path = Path(spec)
    if path.is_file():
        import json

        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
        if isinstance(data, dict) and "model" in data and isinstance(data["model"], dict):
            return from_dict(RunConfig, data).model
        return from_dict(UNetConfig, data)
    if path.is_dir():
        return resolve_config(spec).model
    names = sorted(set(UNET_PRESETS) | set(RUN_PRESETS))
    raise UserError(f"unknown model '{spec}': not a preset ({', '.join(names)}), JSON file or run folder")
