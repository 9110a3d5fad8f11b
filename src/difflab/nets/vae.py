"""A convolutional VAE (Kingma & Welling 2014) sized to the image: encoder q(z|x), decoder p(x|z), prior N(0, I).

The network only maps tensors; the bound (ELBO) it is trained with lives in `difflab.baselines.vae`.
Layout for image_size = 4 * 2^L (L halvings down to a 4x4 map), widths c_i = base_channels * 2^i:

  encoder  conv3x3 (C -> c_0), then per level i: conv3x3 (c_i) + conv4x4 stride 2 (c_i -> c_{i+1}),
           flatten (c_L x 4 x 4) -> linear -> [mu, log sigma^2] (2 * latent_dim)
  decoder  linear (latent_dim -> c_L x 4 x 4), then per level (reversed): convT4x4 stride 2 + conv3x3,
           conv3x3 (c_0 -> C): the Gaussian mean, or the Bernoulli logits, of every pixel

SiLU activations and no normalisation layers, so every example's bound depends on that example only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from difflab.configs import field
from difflab.errors import UserError

Likelihood = Literal["gaussian", "bernoulli"]


@dataclass(frozen=True)
class VAEConfig:
    image_size: int = field(8, help="height = width of the images: a power of two >= 4 (the encoder halves it down to 4x4)")
    in_channels: int = field(1, help="image channels (1 grayscale, 3 RGB)")
    base_channels: int = field(32, help="width of the full-resolution layers; doubles at each halving")
    latent_dim: int = field(16, help="dimension of z")
    likelihood: Likelihood = field("gaussian", help="p(x|z): 'gaussian' (mean = decoder output, std below) or 'bernoulli' "
                                                    "(logits; pixels rescaled to [0, 1] act as probabilities)")
    decoder_std: float | None = field(None, help="gaussian: the fixed std of p(x|z) on the [-1, 1] scale; null learns one shared "
                                                 "std (the sigma-VAE of Rybkin et al. 2021), so the bound stays a true ELBO")
    beta: float = field(1.0, help="weight of KL(q(z|x) || p(z)) in the training loss (Higgins et al. 2017); 1 = the ELBO")

    def __post_init__(self):
        s = self.image_size
        if s < 4 or s & (s - 1):
            raise UserError(f"model.image_size must be a power of two >= 4 for the VAE; got {s}")
        for key in ("in_channels", "base_channels", "latent_dim"):
            if getattr(self, key) < 1:
                raise UserError(f"model.{key} must be at least 1; got {getattr(self, key)}")
        if self.likelihood not in ("gaussian", "bernoulli"):
            raise UserError(f"model.likelihood must be one of 'gaussian', 'bernoulli'; got {self.likelihood!r}")
        if self.decoder_std is not None and not self.decoder_std > 0:
            raise UserError(f"model.decoder_std must be positive or null (learned); got {self.decoder_std}")
        if self.likelihood == "bernoulli" and self.decoder_std is not None:
            raise UserError("model.decoder_std applies to the gaussian likelihood only; set it to null for 'bernoulli'")
        if not self.beta > 0:
            raise UserError(f"model.beta must be positive; got {self.beta}")

    @property
    def levels(self) -> int:
        """Number of stride-2 halvings from image_size down to 4."""
        return int(math.log2(self.image_size)) - 2

    @property
    def widths(self) -> tuple[int, ...]:
        """c_0 .. c_L."""
        return tuple(self.base_channels * 2**i for i in range(self.levels + 1))


class VAEOutput(NamedTuple):
    """What the bound needs for a batch x: p(x|z) parameters at z ~ q(z|x), and q(z|x) itself."""

    decoded: Tensor  # (B, C, H, W): Gaussian mean or Bernoulli logits of p(x|z)
    mu: Tensor  # (B, latent): mean of q(z|x)
    log_var: Tensor  # (B, latent): log variance of q(z|x)
    log_std: Tensor  # (): log std of the Gaussian p(x|z) (unused by 'bernoulli')


def reparameterize(mu: Tensor, log_var: Tensor, eps: Tensor) -> Tensor:
    """z = mu + sigma * eps with sigma = exp(log_var / 2): a sample of q(z|x) differentiable in (mu, log_var) (Kingma & Welling Eq. 10)."""
    return mu + torch.exp(0.5 * log_var) * eps


class VAE(nn.Module):
    """forward(x, eps) -> VAEOutput at z = mu + sigma * eps; eps ~ N(0, I) of shape (B, latent_dim)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        w, act = cfg.widths, nn.SiLU
        enc: list[nn.Module] = [nn.Conv2d(cfg.in_channels, w[0], 3, padding=1), act()]
        for i in range(cfg.levels):
            enc += [nn.Conv2d(w[i], w[i], 3, padding=1), act(), nn.Conv2d(w[i], w[i + 1], 4, stride=2, padding=1), act()]
        self.encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(w[-1] * 16, 2 * cfg.latent_dim))
        self.project = nn.Sequential(nn.Linear(cfg.latent_dim, w[-1] * 16), act())
        dec: list[nn.Module] = []
        for i in reversed(range(cfg.levels)):
            dec += [nn.ConvTranspose2d(w[i + 1], w[i], 4, stride=2, padding=1), act(), nn.Conv2d(w[i], w[i], 3, padding=1), act()]
        self.decoder = nn.Sequential(*dec, nn.Conv2d(w[0], cfg.in_channels, 3, padding=1))
        # log std of a Gaussian p(x|z) shared by all pixels: learned (a parameter) or fixed (a buffer).
        if cfg.likelihood == "gaussian" and cfg.decoder_std is None:
            self.log_std = nn.Parameter(torch.zeros(()))
        else:
            self.register_buffer("log_std", torch.tensor(math.log(cfg.decoder_std or 1.0)))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, log sigma^2) of q(z|x), each (B, latent_dim)."""
        h = self.encoder(x)
        mu, log_var = h.chunk(2, dim=1)
        return mu, log_var

    def decode(self, z: Tensor) -> Tensor:
        """Decoder output (B, C, H, W): the Gaussian mean or the Bernoulli logits of p(x|z)."""
        h = self.project(z).reshape(z.shape[0], self.cfg.widths[-1], 4, 4)
        return self.decoder(h)

    def forward(self, x: Tensor, eps: Tensor) -> VAEOutput:
        mu, log_var = self.encode(x)
        return VAEOutput(self.decode(reparameterize(mu, log_var, eps)), mu, log_var, self.log_std)

    @torch.no_grad()
    def sample(self, z: Tensor) -> Tensor:
        """Images in [-1, 1] for prior draws z (B, latent): the decoder's mean (Gaussian) or 2 p - 1 (Bernoulli), no pixel noise."""
        out = self.decode(z)
        if self.cfg.likelihood == "bernoulli":
            return torch.sigmoid(out) * 2 - 1
        return out.clamp(-1, 1)
