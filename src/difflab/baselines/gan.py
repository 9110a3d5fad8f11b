"""The DCGAN's TrainTask: two phases per step, discriminator then generator, with the non-saturating losses.

Goodfellow et al. 2014 (Sec. 3): D maximises log D(x) + log(1 - D(G(z))); G, instead of minimising
log(1 - D(G(z))), which saturates when D rejects its samples early in training, maximises log D(G(z)).
With D(x) = sigmoid(logit) and softplus(a) = log(1 + e^a), per example:

  L_D = -log D(x) - log(1 - D(G(z))) = softplus(-logit_real) + softplus(logit_fake)
  L_G = -log D(G(z))                 = softplus(-logit_fake)

One z ~ N(0, I) per example and step, drawn per global batch by the Trainer's step generator, serves both phases
(as PyTorch's DCGAN example reuses its fake batch). The Trainer steps one Adam per phase: D on L_D, then G on L_G
against the updated D (Radford et al. 2016: Adam, lr 2e-4, beta1 0.5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.baselines.latent import LatentTask
from difflab.nets.dcgan import DCGANConfig
from difflab.train.trainer import Phase


def discriminator_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """L_D per example (B,): binary cross-entropy with real -> 1, fake -> 0."""
    return F.softplus(-logits_real) + F.softplus(logits_fake)


def generator_loss(logits_fake: Tensor) -> Tensor:
    """Non-saturating L_G per example (B,): -log D(G(z))."""
    return F.softplus(-logits_fake)


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
