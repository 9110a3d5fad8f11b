"""The KL-regularised autoencoder of latent diffusion (Rombach et al. 2022, Sec. 3.1 and App. G) in diffusers'
`AutoencoderKL` layout: module names are diffusers', so its state dicts load key for key (interop/diffusers_vae.py).

    encoder  conv_in (C -> c_0); per level i: layers_per_block ResNet blocks (c_{i-1} -> c_i), a stride-2 conv except
             at the last level; mid block [ResNet, attention, ResNet]; GroupNorm, SiLU, conv_out (-> 2 L: mean, log var)
    quant_conv (1x1, 2L -> 2L) -> the diagonal Gaussian posterior q(z|x) of L latent channels at size H / f
    post_quant_conv (1x1, L -> L), decoder: conv_in (L -> c_last), mid block, per level (reversed) layers_per_block + 1
             ResNet blocks and a nearest x2 + conv up-sampling except at the last; GroupNorm, SiLU, conv_out (-> C)

f = 2^(levels - 1): 8 for Stable Diffusion's VAE (four levels 128/256/512/512).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.configs import field
from difflab.errors import UserError

EPS = 1e-6  # every GroupNorm of diffusers' Encoder/Decoder (resnet_eps, conv_norm_out)
LOGVAR_RANGE = (-30.0, 20.0)  # DiagonalGaussianDistribution clamps log sigma^2 here (LDM and diffusers alike)


@dataclass(frozen=True)
class AutoencoderKLConfig:
    image_size: int = field(32, help="height = width of the training images (the network is convolutional; this fixes the latent size)")
    in_channels: int = field(3, help="image channels (1 grayscale, 3 RGB); the decoder outputs the same number")
    block_out_channels: tuple[int, ...] = field((64,), help="width of each resolution level, full resolution first; each level "
                                                            "after the first halves H and W, so f = 2^(levels - 1)")
    layers_per_block: int = field(1, help="ResNet blocks per encoder level (the decoder has one more per level, as diffusers)")
    latent_channels: int = field(4, help="L: channels of the latent z (the diffusion backbone's in/out channels)")
    norm_num_groups: int = field(32, help="groups of every GroupNorm (must divide every width in block_out_channels)")
    mid_attention: bool = field(True, help="single-head self-attention in the middle of encoder and decoder (diffusers' mid_block_add_attention)")
    use_quant_conv: bool = field(True, help="the 1x1 conv on the encoder's moments (quant_conv)")
    use_post_quant_conv: bool = field(True, help="the 1x1 conv on z before the decoder (post_quant_conv)")

    def __post_init__(self):
        for key in ("image_size", "in_channels", "layers_per_block", "latent_channels", "norm_num_groups"):
            if getattr(self, key) < 1:
                raise UserError(f"model.{key} must be at least 1; got {getattr(self, key)}")
        if not self.block_out_channels or any(c < 1 for c in self.block_out_channels):
            raise UserError(f"model.block_out_channels must be a non-empty list of positive widths; got {list(self.block_out_channels)}")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise UserError(f"model.norm_num_groups {self.norm_num_groups} must divide every width of model.block_out_channels; {bad[0]} is not a multiple")
        if self.image_size % self.downsample_factor:
            raise UserError(f"model.image_size {self.image_size} must be divisible by the down-sampling factor "
                            f"f = {self.downsample_factor} of {len(self.block_out_channels)} levels")

    @property
    def downsample_factor(self) -> int:
        """f = H / h: every level but the last halves the resolution."""
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(L, h, w) of z for image_size x image_size images."""
        s = self.image_size // self.downsample_factor
        return (self.latent_channels, s, s)


def _norm(cfg: AutoencoderKLConfig, channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(cfg.norm_num_groups, channels, eps=EPS)


class ResnetBlock(nn.Module):
    """diffusers' ResnetBlock2D without time embedding: x + conv(SiLU(GN(conv(SiLU(GN(x)))))), 1x1 shortcut when widths differ."""

    def __init__(self, cfg: AutoencoderKLConfig, c_in: int, c_out: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cfg, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = _norm(cfg, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class SpatialSelfAttention(nn.Module):
    """One-head self-attention over the h*w positions with a GroupNorm in front and a residual (diffusers' `Attention`)."""

    def __init__(self, cfg: AutoencoderKLConfig, channels: int):
        super().__init__()
        self.group_norm = _norm(cfg, channels)
        self.to_q, self.to_k, self.to_v = (nn.Linear(channels, channels) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])  # to_out.0, diffusers' key (to_out.1 is a dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        seq = self.group_norm(x).reshape(b, c, h * w).transpose(1, 2)  # (B, hw, C)
        q, k, v = self.to_q(seq), self.to_k(seq), self.to_v(seq)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]  # softmax(q k^T / sqrt(C)) v
        return x + self.to_out[0](out).transpose(1, 2).reshape(b, c, h, w)


class MidBlock(nn.Module):
    """[ResNet, attention, ResNet] at the lowest resolution (diffusers' UNetMidBlock2D without time embedding)."""

    def __init__(self, cfg: AutoencoderKLConfig, channels: int):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(cfg, channels, channels) for _ in range(2)])
        self.attentions = nn.ModuleList([SpatialSelfAttention(cfg, channels)]) if cfg.mid_attention else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.resnets[0](x)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding right and bottom by one (diffusers' Downsample2D with padding 0, LDM's encoder)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv (diffusers' Upsample2D)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: ResNet blocks, then an optional resampler (diffusers' DownEncoderBlock2D / UpDecoderBlock2D)."""

    def __init__(self, cfg: AutoencoderKLConfig, c_in: int, c_out: int, layers: int, resample: str | None):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(cfg, c_in if i == 0 else c_out, c_out) for i in range(layers)])
        if resample == "down":
            self.downsamplers = nn.ModuleList([Downsample(c_out)])
        elif resample == "up":
            self.upsamplers = nn.ModuleList([Upsample(c_out)])
        self.resample = resample

    def forward(self, x: Tensor) -> Tensor:
        for block in self.resnets:
            x = block(x)
        if self.resample == "down":
            x = self.downsamplers[0](x)
        elif self.resample == "up":
            x = self.upsamplers[0](x)
        return x


class Encoder(nn.Module):
    """x (B, C, H, W) -> the moments [mean, log var] (B, 2L, H/f, W/f), before quant_conv."""

    def __init__(self, cfg: AutoencoderKLConfig):
        super().__init__()
        ch = cfg.block_out_channels
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        last = len(ch) - 1
        self.down_blocks = nn.ModuleList([Level(cfg, ch[max(i - 1, 0)], ch[i], cfg.layers_per_block, None if i == last else "down")
                                          for i in range(len(ch))])
        self.mid_block = MidBlock(cfg, ch[-1])
        self.conv_norm_out = _norm(cfg, ch[-1])
        self.conv_out = nn.Conv2d(ch[-1], 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down_blocks:
            h = level(h)
        return self.conv_out(F.silu(self.conv_norm_out(self.mid_block(h))))


class Decoder(nn.Module):
    """z (B, L, h, w), after post_quant_conv -> the reconstruction (B, C, H, W)."""

    def __init__(self, cfg: AutoencoderKLConfig):
        super().__init__()
        rev = tuple(reversed(cfg.block_out_channels))
        self.conv_in = nn.Conv2d(cfg.latent_channels, rev[0], 3, padding=1)
        self.mid_block = MidBlock(cfg, rev[0])
        last = len(rev) - 1
        self.up_blocks = nn.ModuleList([Level(cfg, rev[max(i - 1, 0)], rev[i], cfg.layers_per_block + 1, None if i == last else "up")
                                        for i in range(len(rev))])
        self.conv_norm_out = _norm(cfg, rev[-1])
        self.conv_out = nn.Conv2d(rev[-1], cfg.in_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid_block(self.conv_in(z))
        for level in self.up_blocks:
            h = level(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class DiagonalGaussian:
    """q(z|x) = N(mean, diag exp(log_var)) (Rombach et al. 2022, Sec. 3.1: the KL-reg. autoencoder's posterior)."""

    def __init__(self, mean: Tensor, log_var: Tensor):
        self.mean, self.log_var = mean, log_var.clamp(*LOGVAR_RANGE)

    def sample(self, eps: Tensor) -> Tensor:
        """z = mean + sigma * eps (reparameterised; eps ~ N(0, I) of the mean's shape)."""
        return self.mean + torch.exp(0.5 * self.log_var) * eps

    def kl(self) -> Tensor:
        """KL(q(z|x) || N(0, I)) per example, summed over latent elements: 0.5 sum(mean^2 + sigma^2 - 1 - log sigma^2)."""
        return 0.5 * (self.mean.pow(2) + self.log_var.exp() - 1.0 - self.log_var).flatten(1).sum(1)


class AutoencoderKL(nn.Module):
    """encode(x) -> q(z|x); decode(z) -> x_hat (Rombach et al. 2022, Sec. 3.1; diffusers' AutoencoderKL names)."""

    def __init__(self, cfg: AutoencoderKLConfig):
        super().__init__()
        self.cfg = cfg
        L = cfg.latent_channels
        self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * L, 2 * L, 1) if cfg.use_quant_conv else None
        self.post_quant_conv = nn.Conv2d(L, L, 1) if cfg.use_post_quant_conv else None

    def encode(self, x: Tensor) -> DiagonalGaussian:
        moments = self.encoder(x)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, log_var = moments.chunk(2, dim=1)
        return DiagonalGaussian(mean, log_var)

    def decode(self, z: Tensor) -> Tensor:
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def forward(self, x: Tensor, eps: Tensor | None = None) -> tuple[Tensor, DiagonalGaussian]:
        """(x_hat, q(z|x)): decoded from z = mean + sigma * eps, or from the mean when eps is None."""
        q = self.encode(x)
        return self.decode(q.mean if eps is None else q.sample(eps)), q


def _sd_vae() -> AutoencoderKLConfig:
    """Stable Diffusion's KL-f8 VAE (CompVis kl-f8, stabilityai/sd-vae-ft-mse): 83,653,863 parameters."""
    return AutoencoderKLConfig(image_size=256, in_channels=3, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                               latent_channels=4, norm_num_groups=32)


AUTOENCODER_PRESETS: Mapping[str, AutoencoderKLConfig] = MappingProxyType({
    "sd-vae": _sd_vae(),
    # f = 4 for 32x32 grayscale images (digits upscaled): 8x8x4 latents; narrow enough to train on a CPU.
    # (Bicubic up-sampled 8x8 digits are smooth: 16/32/32 wide reconstructs them; 0.24M parameters.)
    "digits32": AutoencoderKLConfig(image_size=32, in_channels=1, block_out_channels=(16, 32, 32), layers_per_block=1,
                                    latent_channels=4, norm_num_groups=8),
    # f = 2 for the native 8x8 digits: 4x4x2 latents (half of the 64 pixels).
    "digits8": AutoencoderKLConfig(image_size=8, in_channels=1, block_out_channels=(32, 64), layers_per_block=1,
                                   latent_channels=2, norm_num_groups=16),
})


def autoencoder_preset(name: str) -> AutoencoderKLConfig:
    try:
        return AUTOENCODER_PRESETS[name]
    except KeyError:
        raise UserError(f"unknown autoencoder preset {name!r}; valid: {', '.join(AUTOENCODER_PRESETS)}") from None


def psnr(x: Tensor, x_hat: Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [-1, 1] (peak-to-peak 2): 10 log10(4 / MSE)."""
    mse = float(((x.double() - x_hat.double().clamp(-1, 1)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)
