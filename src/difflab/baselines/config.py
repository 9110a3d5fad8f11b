"""Run configs of the baselines (a VAE, a DCGAN), their presets, and resolving a name, file or run folder to one.

Each config carries its `kind` ("vae" | "dcgan") as a top-level key, so a config.json names its run kind and
`difflab train --config FILE_OR_RUN` can tell a baseline from a diffusion run without guessing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

from difflab.configs import apply_overrides, field, from_dict
from difflab.data import DataConfig
from difflab.errors import UserError
from difflab.nets.dcgan import DCGANConfig
from difflab.nets.vae import VAEConfig
from difflab.train.config import TrainConfig

BASELINE_KINDS = ("vae", "dcgan")


@dataclass(frozen=True)
class BaselineSampleConfig:
    grid_size: int = field(64, help="number of images in each training sample grid")

    def __post_init__(self):
        if self.grid_size < 1:
            raise UserError(f"sample.grid_size must be at least 1; got {self.grid_size}")


@dataclass(frozen=True)
class VAEEvalConfig:
    split: str = field("test", help="data split whose ELBO is written to elbo.json after training ('test' = held out)")
    repeats: int = field(4, help="draws of z ~ q(z|x) per image in the Monte-Carlo ELBO")
    seed: int = field(0, help="seed of those draws")

    def __post_init__(self):
        if self.split not in ("train", "test", "all"):
            raise UserError(f"eval.split must be one of 'train', 'test', 'all'; got {self.split!r}")
        if self.repeats < 1:
            raise UserError(f"eval.repeats must be at least 1; got {self.repeats}")


def _check_train(train: TrainConfig) -> None:
    if train.label_dropout:
        raise UserError("train.label_dropout is for class-conditional diffusion models; the baselines are unconditional")


@dataclass(frozen=True)
class VAERunConfig:
    kind: Literal["vae"] = field("vae", help="run kind: 'vae' (a variational autoencoder)")
    data: DataConfig = field(default_factory=lambda: DataConfig(labels="ignore"), help="training data (labels are not used)")
    model: VAEConfig = field(default_factory=VAEConfig, help="the VAE: architecture, likelihood, beta")
    train: TrainConfig = field(default_factory=TrainConfig, help="optimisation")
    sample: BaselineSampleConfig = field(default_factory=BaselineSampleConfig, help="sample grids")
    eval: VAEEvalConfig = field(default_factory=VAEEvalConfig, help="the ELBO report written after training")

    def __post_init__(self):
        _check_train(self.train)


@dataclass(frozen=True)
class GANRunConfig:
    kind: Literal["dcgan"] = field("dcgan", help="run kind: 'dcgan' (Radford et al. 2016)")
    data: DataConfig = field(default_factory=lambda: DataConfig(labels="ignore"), help="training data (labels are not used)")
    model: DCGANConfig = field(default_factory=DCGANConfig, help="generator and discriminator")
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=2e-4, adam_beta1=0.5, grad_clip=0.0, ema_rate=0.0),
                               help="optimisation: one Adam per network with the same settings (Radford et al.: lr 2e-4, beta1 0.5)")
    sample: BaselineSampleConfig = field(default_factory=BaselineSampleConfig, help="sample grids")

    def __post_init__(self):
        _check_train(self.train)


BaselineRunConfig = Union[VAERunConfig, GANRunConfig]
CONFIG_CLASSES = {"vae": VAERunConfig, "dcgan": GANRunConfig}


def _digits_vae() -> VAERunConfig:
    """A conv VAE on the 8x8 digits: 16-d latent, Gaussian p(x|z) with a learned shared std, beta = 1."""
    return VAERunConfig(
        data=DataConfig(name="digits", split="train", labels="ignore"),
        model=VAEConfig(image_size=8, in_channels=1, base_channels=32, latent_dim=16, likelihood="gaussian", decoder_std=None, beta=1.0),
        train=TrainConfig(steps=5000, batch_size=128, lr=1e-3, warmup_steps=100, lr_schedule="cosine", ema_rate=0.995,
                          grad_clip=1.0, log_every=50, checkpoint_every=1000, sample_every=1000),
        sample=BaselineSampleConfig(grid_size=100),
    )


def _digits_dcgan() -> GANRunConfig:
    """DCGAN on the 8x8 digits: G 2x2 -> 4x4 -> 8x8, D 8x8 -> 4x4 -> 2x2 -> logit; Adam(2e-4, beta1 0.5), batch 128, no EMA."""
    return GANRunConfig(
        data=DataConfig(name="digits", split="train", labels="ignore"),
        model=DCGANConfig(image_size=8, in_channels=1, latent_dim=100, g_channels=64, d_channels=64, start_size=2),
        train=TrainConfig(steps=5000, batch_size=128, lr=2e-4, adam_beta1=0.5, adam_beta2=0.999, warmup_steps=0, lr_schedule="constant",
                          ema_rate=0.0, grad_clip=0.0, log_every=50, checkpoint_every=1000, sample_every=1000),
        sample=BaselineSampleConfig(grid_size=100),
    )


BASELINE_PRESETS = {"digits-vae": _digits_vae, "digits-dcgan": _digits_dcgan}


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def baseline_kind_of(spec: str | Path) -> str | None:
    """'vae' / 'dcgan' when `spec` is a baseline preset, config file or run folder; None for anything else (e.g. diffusion)."""
    spec = str(spec)
    if spec in BASELINE_PRESETS:
        return BASELINE_PRESETS[spec]().kind
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        return None
    data = _read_json(path)
    kind = data.get("kind") if data else None
    return kind if kind in BASELINE_KINDS else None


def resolve_baseline_config(spec: str | Path, overrides: list[str] = ()) -> BaselineRunConfig:
    """A baseline preset, JSON file or run folder, with `key=value` overrides applied in order."""
    spec = str(spec)
    if spec in BASELINE_PRESETS:
        cfg = BASELINE_PRESETS[spec]()
    else:
        path = Path(spec).expanduser()
        path = path / "config.json" if path.is_dir() else path
        data = _read_json(path) if path.is_file() else None
        if data is None:
            raise UserError(f"unknown baseline config '{spec}': not a preset ({', '.join(BASELINE_PRESETS)}) nor a readable JSON file or run folder")
        kind = data.get("kind")
        if kind not in CONFIG_CLASSES:
            raise UserError(f"{path} has kind {kind!r}; a baseline config needs kind one of {', '.join(repr(k) for k in BASELINE_KINDS)}")
        cfg = from_dict(CONFIG_CLASSES[kind], data)
    if any(item.partition("=")[0].strip() == "kind" for item in overrides):
        raise UserError("the run kind cannot be changed with --set; start from another preset (digits, digits-vae, digits-dcgan)")
    return apply_overrides(cfg, overrides)
