"""The GAN losses of the DCGAN baseline: the discriminator's cross-entropy and the non-saturating generator loss.

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

import torch.nn.functional as F
from torch import Tensor


def discriminator_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """L_D per example (B,): binary cross-entropy with real -> 1, fake -> 0."""
    return F.softplus(-logits_real) + F.softplus(logits_fake)


def generator_loss(logits_fake: Tensor) -> Tensor:
    """Non-saturating L_G per example (B,): -log D(G(z))."""
    return F.softplus(-logits_fake)
