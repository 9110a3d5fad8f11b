"""The DiT run kind: a diffusion run whose network is a diffusion transformer (Peebles & Xie 2023; docs/dit.md).

A DiT run is a diffusion run with another backbone, so everything but the network is the diffusion kind's: the
config is RunConfig with `model` a DiTConfig (same sections, same checks, and any section RunConfig gains later),
training is DiffusionTask, and the loaded run is a ModelDenoiser. Samplers, guidance, eval and compare see a
Denoiser and never the backbone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from difflab.configs import field
from difflab.data import DataConfig
from difflab.denoiser import DenoiserConfig
from difflab.losses import LossConfig
from difflab.nets import DiT, DiTConfig
from difflab.process import ProcessConfig
from difflab.runs.diffusion import KIND as DIFFUSION_KIND
from difflab.runs.diffusion import RunConfig, SampleConfig
from difflab.training.config import TrainConfig


@dataclass(frozen=True)
class DiTRunConfig(RunConfig):
    """RunConfig with a DiT for its network and DiT's recipe as defaults: learned sigma (learned_range), the hybrid loss.

    Fields redefined here keep their place in RunConfig's order, so config.json reads the same for both kinds."""

    kind: Literal["dit"] = field("dit", help="run kind: 'dit' (a diffusion model whose network is a diffusion transformer)")
    model: DiTConfig = field(default_factory=DiTConfig, help="the diffusion transformer (DiT-XL/2 by default)")
    denoiser: DenoiserConfig = field(default_factory=lambda: DenoiserConfig(var_type="learned_range"),
                                     help="what the network predicts and the reverse variance (DiT: eps, learned_range)")
    loss: LossConfig = field(default_factory=lambda: LossConfig(type="hybrid"), help="training objective (DiT: L_simple + L_vlb, improved DDPM's hybrid)")


def _digits_dit() -> DiTRunConfig:
    """The `digits` recipe with a DiT: patch 2 on 8x8 digits (16 tokens), width 128, 6 blocks; learned sigma and the
    hybrid loss as DiT trains; label dropout 0.1 (DiT's class_dropout_prob) for classifier-free guidance."""
    return DiTRunConfig(
        data=DataConfig(name="digits", split="train"),
        model=DiTConfig(image_size=8, in_channels=1, out_channels=1, patch_size=2, hidden_size=128, depth=6, num_heads=4,
                        num_classes=10, class_dropout_null=True, learn_sigma=True),
        process=ProcessConfig(kind="vp", schedule="linear", T=1000),
        train=TrainConfig(steps=3000, batch_size=128, lr=5e-4, warmup_steps=100, lr_schedule="cosine", ema_rate=0.995,
                          grad_clip=1.0, log_every=50, checkpoint_every=500, sample_every=1000, label_dropout=0.1),
        sample=SampleConfig(sampler="ddim", steps=50, grid_size=100),
    )


DIT_RUN_PRESETS = {"digits-dit": _digits_dit}

KIND = dataclasses.replace(
    DIFFUSION_KIND,  # data, checks, task, denoiser, frozen sections: the diffusion kind's, whatever the network
    name="dit",
    summary="a diffusion transformer (DiT, Peebles & Xie 2023) sampled through a Denoiser",
    config_class=DiTRunConfig,
    presets=DIT_RUN_PRESETS,
    build_model=lambda cfg: DiT(cfg.model),
    train_hint="difflab train --config digits-dit",
)
