"""DCGAN (Radford, Metz & Chintala 2016) scaled to the image size: generator G(z) and discriminator D(x).

Radford et al.'s guidelines (Sec. 3): strided convolutions instead of pooling (fractionally strided in G),
batch norm in both networks except G's output and D's input layer, ReLU in G with Tanh at the output,
LeakyReLU(0.2) in D, no fully connected hidden layers, weights initialised from N(0, 0.02).
With L = log2(image_size / start_size) and widths doubling towards the small end, at 64x64 and start_size 4:

  G  z (B, latent) -> convT (start_size x start_size kernel) -> 4x4x512 -> 8x8x256 -> 16x16x128 -> 32x32x64 -> 64x64xC, Tanh
  D  64x64xC -> 32x32x64 -> 16x16x128 -> 8x8x256 -> 4x4x512 -> conv (start_size kernel) -> 1 logit

which is the paper's LSUN architecture (Fig. 1) as in PyTorch's DCGAN example. Smaller images drop levels.
Batch norm is `difflab.nets.norm.BatchNorm2d`: nn.BatchNorm2d in one process, statistics over all ranks under DDP
(so N ranks train what one process trains on the same global batch).
The nets only map tensors; the non-saturating losses live in `difflab.baselines.gan`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from difflab.configs import field
from difflab.errors import UserError
from difflab.nets.norm import BatchNorm2d


@dataclass(frozen=True)
class DCGANConfig:
    image_size: int = field(64, help="height = width of the images: start_size * 2^L with L >= 1")
    in_channels: int = field(3, help="image channels (1 grayscale, 3 RGB)")
    latent_dim: int = field(100, help="dimension of the generator's input noise z ~ N(0, I) (Radford et al.: 100)")
    g_channels: int = field(64, help="generator width at the last hidden layer (ngf); doubles towards the first")
    d_channels: int = field(64, help="discriminator width at its first layer (ndf); doubles towards the last")
    start_size: int = field(4, help="side of G's first feature map and of D's last one (Radford et al.: 4)")

    def __post_init__(self):
        for key in ("in_channels", "latent_dim", "g_channels", "d_channels", "start_size"):
            if getattr(self, key) < 1:
                raise UserError(f"model.{key} must be at least 1; got {getattr(self, key)}")
        ratio = self.image_size / self.start_size
        if self.image_size <= self.start_size or ratio != int(ratio) or int(ratio) & (int(ratio) - 1):
            raise UserError(f"model.image_size ({self.image_size}) must be model.start_size ({self.start_size}) times a power of two >= 2")

    @property
    def levels(self) -> int:
        """Number of stride-2 layers in each network."""
        return int(math.log2(self.image_size // self.start_size))


def dcgan_init(module: nn.Module) -> None:
    """Radford et al. Sec. 4: conv weights ~ N(0, 0.02); batch-norm scale ~ N(1, 0.02), shift 0 (PyTorch's DCGAN example)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Module):
    """z (B, latent_dim) -> images (B, C, H, W) in [-1, 1]."""

    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        L, s0 = cfg.levels, cfg.start_size
        widths = [cfg.g_channels * 2 ** (L - 1 - i) for i in range(L)]  # at s0, 2 s0, ..., image_size / 2
        # The projection of z: a convT with an s0 x s0 kernel on a 1x1 map (Radford et al.'s "fully connected" first layer).
        layers: list[nn.Module] = [nn.ConvTranspose2d(cfg.latent_dim, widths[0], s0, 1, 0, bias=False), BatchNorm2d(widths[0]), nn.ReLU(True)]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), BatchNorm2d(b), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], cfg.in_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """images (B, C, H, W) -> logits (B,) of "real"."""

    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        L, s0 = cfg.levels, cfg.start_size
        widths = [cfg.d_channels * 2**i for i in range(L)]  # at image_size / 2, ..., s0
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, widths[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), BatchNorm2d(b), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(widths[-1], 1, s0, 1, 0, bias=False)]  # the flattened last map -> one logit
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten()


class DCGAN(nn.Module):
    """Both networks in one module, so one Trainer (and one DDP wrapper) holds them.

    forward(z, x_real=None) -> (D(G(z)) logits (B,), D(x_real) logits (B,) or None). With x_real (the
    discriminator's step), G(z) is computed without gradients and D sees the real and the fake batches
    separately, so its batch norm never mixes them (as in PyTorch's DCGAN example).
    """

    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        self.cfg = cfg
        self.generator = DCGANGenerator(cfg)
        self.discriminator = DCGANDiscriminator(cfg)

    def forward(self, z: Tensor, x_real: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        if x_real is None:
            return self.discriminator(self.generator(z)), None
        with torch.no_grad():
            fake = self.generator(z)
        return self.discriminator(fake), self.discriminator(x_real)

    @torch.no_grad()
    def sample(self, z: Tensor) -> Tensor:
        """Images in [-1, 1] for z (B, latent_dim)."""
        return self.generator(z)
