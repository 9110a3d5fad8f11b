"""The classic baselines of seed 000's experiment as run kinds: a convolutional VAE ("vae") and a DCGAN ("dcgan").

Both decode a latent z ~ N(0, I) to an image in one network pass, train through the shared Trainer (checkpoints,
resume, EMA, DDP) and keep the run folder layout of every kind; a VAE run adds elbo.json (the held-out ELBO, written
when training ends). Their objectives are in losses/elbo.py and losses/gan.py; docs/baselines.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

import torch
from torch import Tensor, nn

from difflab.data.atomic import atomic_write_text
from difflab.configs import field
from difflab.data import DataConfig, ImageData, load_dataset
from difflab.errors import UserError
from difflab.losses.elbo import elbo_terms, evaluate_elbo
from difflab.losses.gan import discriminator_loss, generator_loss
from difflab.nets.dcgan import DCGAN, DCGANConfig
from difflab.nets.vae import VAE, VAEConfig
from difflab.runs.kind import RunKind
from difflab.training.config import TrainConfig
from difflab.training.trainer import Phase

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


class LatentTask:
    """Base of VAETask and GANTask: holds the model config (with `latent_dim`) and the grid size; samples grids from z."""

    def __init__(self, cfg, grid_size: int = 64):
        self.cfg, self.grid_size = cfg, grid_size
        self._logs: dict[str, float] = {}

    def step_logs(self) -> dict[str, float]:
        return dict(self._logs)

    @torch.no_grad()
    def sample_grid(self, model: nn.Module, generator: torch.Generator) -> Tensor:
        model.eval()
        z = torch.randn((self.grid_size, self.cfg.latent_dim), generator=generator)
        return model.sample(z.to(next(model.parameters()).device)).cpu()

    def state_dict(self) -> dict[str, Tensor]:
        return {}  # nothing beyond the Trainer's RNG: draws come from its per-step generator

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        pass


class VAETask(LatentTask):
    """TrainTask: loss = rec + beta * KL per dimension; logs rec, kl, the ELBO per dim and the decoder std."""

    cfg: VAEConfig

    def draw(self, generator: torch.Generator, n: int, x_shape: tuple[int, ...]) -> dict[str, Tensor]:
        return {"eps": torch.randn((n, self.cfg.latent_dim), generator=generator, dtype=torch.float32)}

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None, draws: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        out = model(x, draws["eps"].to(device=x.device, dtype=x.dtype))
        terms = elbo_terms(x, out, self.cfg.likelihood)
        extra = {"rec": terms.rec.detach().double(), "kl": terms.kl.detach().double(),
                 "log_std": out.log_std.detach().double().reshape(1).expand(x.shape[0])}
        return terms.rec + self.cfg.beta * terms.kl, extra

    def observe(self, gathered: dict[str, Tensor]) -> None:
        rec, kl = float(gathered["rec"].mean()), float(gathered["kl"].mean())
        self._logs = {"rec": rec, "kl": kl, "elbo_per_dim": -(rec + kl)}
        if self.cfg.likelihood == "gaussian":
            self._logs["decoder_std"] = math.exp(float(gathered["log_std"][0]))


class GANTask(LatentTask):
    """TrainTask with phases ("d": discriminator, "g": generator); logs loss_d, loss_g, and D's mean outputs."""

    phases = (Phase("d", "discriminator"), Phase("g", "generator"))

    cfg: DCGANConfig

    def draw(self, generator: torch.Generator, n: int, x_shape: tuple[int, ...]) -> dict[str, Tensor]:
        return {"z": torch.randn((n, self.cfg.latent_dim), generator=generator, dtype=torch.float32)}

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None, draws: dict[str, Tensor], phase: str) -> tuple[Tensor, dict[str, Tensor]]:
        z = draws["z"].to(device=x.device, dtype=x.dtype)
        if phase == "d":
            logits_fake, logits_real = model(z, x)
            loss = discriminator_loss(logits_real.float(), logits_fake.float())
            return loss, {"d_real": torch.sigmoid(logits_real.detach()).double(), "d_fake": torch.sigmoid(logits_fake.detach()).double()}
        if phase == "g":
            logits_fake, _ = model(z)
            return generator_loss(logits_fake.float()), {"d_fake_g": torch.sigmoid(logits_fake.detach()).double()}
        raise ValueError(f"unknown GAN phase {phase!r}; valid: 'd', 'g'")

    def observe(self, gathered: dict[str, Tensor]) -> None:
        # D(x) and D(G(z)) before D's update; D(G(z)) again after it (PyTorch's DCGAN example prints all three).
        self._logs = {k: float(v.mean()) for k, v in gathered.items()}


def report_elbo(cfg: VAERunConfig, model: VAE, out: Path, step: int) -> dict:
    """The (EMA) VAE's ELBO on cfg.eval.split, on the CPU, written to `out`/elbo.json and returned."""
    held = load_dataset(dataclasses.replace(cfg.data, split=cfg.eval.split, labels="ignore"))
    model = model.to("cpu").eval()
    res = evaluate_elbo(model, held.x, repeats=cfg.eval.repeats, generator=torch.Generator().manual_seed(cfg.eval.seed))
    res = {"split": cfg.eval.split, "step": step, **res}
    atomic_write_text(out / "elbo.json", json.dumps(res, indent=2) + "\n")
    return res


def _check_data(cfg: BaselineRunConfig, data: ImageData) -> None:
    m, x = cfg.model, data.x
    if x.shape[1] != m.in_channels or x.shape[-1] != m.image_size or x.shape[-2] != m.image_size:
        raise UserError(f"data are {x.shape[1]}x{x.shape[-2]}x{x.shape[-1]} but the {cfg.kind} expects "
                        f"{m.in_channels}x{m.image_size}x{m.image_size}: set model.in_channels / model.image_size, or data.image_size / data.channels")


BaselineRunConfig = Union[VAERunConfig, GANRunConfig]

VAE_PRESETS = {"digits-vae": _digits_vae}
DCGAN_PRESETS = {"digits-dcgan": _digits_dcgan}
PLOT_KEYS = {"vae": ("loss", "rec", "kl", "decoder_std"), "dcgan": ("loss_d", "loss_g", "d_real", "d_fake")}


def _after_vae_training(cfg: VAERunConfig, trainer, out: Path) -> None:
    report_elbo(cfg, trainer.ema.shadow, out, trainer.step)


def _common(kind: str) -> dict:
    """What the two baseline kinds share: unlabelled data, the same checks, z -> image in one pass."""
    return dict(
        data_config=lambda cfg: dataclasses.replace(cfg.data, labels="ignore"),
        check_data=_check_data,
        uses_labels=lambda cfg: False,
        frozen=("kind", "data", "model"),
        changeable="train.*, sample.* and eval.*",
        train_hint=f"difflab train --config digits-{kind}",
        image_shape=lambda cfg: (cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size),
        plot_keys=PLOT_KEYS[kind],
        generate=lambda net, z: net.sample(z),
        latent_dim=lambda cfg: cfg.model.latent_dim,
    )


VAE_KIND = RunKind(name="vae", summary="a convolutional VAE (Kingma & Welling 2014), sampled by decoding z ~ N(0, I)",
                   config_class=VAERunConfig, presets=VAE_PRESETS, build_model=lambda cfg: VAE(cfg.model),
                   build_task=lambda cfg, model, device: VAETask(cfg.model, cfg.sample.grid_size),
                   after_training=_after_vae_training, **_common("vae"))
DCGAN_KIND = RunKind(name="dcgan", summary="a DCGAN (Radford et al. 2016), sampled as G(z)",
                     config_class=GANRunConfig, presets=DCGAN_PRESETS, build_model=lambda cfg: DCGAN(cfg.model),
                     build_task=lambda cfg, model, device: GANTask(cfg.model, cfg.sample.grid_size), **_common("dcgan"))
