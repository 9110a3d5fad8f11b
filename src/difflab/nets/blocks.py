"""U-Net building blocks of ADM (Dhariwal & Nichol 2021, Sec. 3 and App. A): ResBlock, resampling, GroupNorm.

Module and attribute names mirror openai/guided-diffusion's `unet.py` (in_layers, emb_layers,
out_layers, skip_connection, h_upd/x_upd, op, conv) so its state dicts load without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 for half-precision inputs, as ADM's `GroupNorm32`."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            return super().forward(x.float()).to(x.dtype)
        return super().forward(x)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a module's parameters (ADM zero-inits every layer that ends a residual branch)."""
    for p in module.parameters():
        p.detach().zero_()
    return module


class TimestepBlock(nn.Module):
    """Marker: a module whose forward takes (x, emb), emb the (B, emb_dim) timestep/label embedding."""


class TimestepEmbedSequential(nn.Sequential):
    """An nn.Sequential that passes emb to the children that are TimestepBlocks."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Downsample(nn.Module):
    """Halve H and W: a stride-2 3x3 conv, or 2x2 average pooling without `use_conv`.

    padding=0 reproduces DDPM's layout (pad right/bottom by one, then conv with no padding).
    """

    def __init__(self, channels: int, use_conv: bool, padding: int = 1):
        super().__init__()
        self.channels = channels
        self.pad_right_bottom = use_conv and padding == 0
        if use_conv:
            self.op: nn.Module = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)
        else:
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        if self.pad_right_bottom:
            x = F.pad(x, (0, 1, 0, 1))
        return self.op(x)


class Upsample(nn.Module):
    """Double H and W with nearest-neighbour interpolation, then an optional 3x3 conv."""

    def __init__(self, channels: int, use_conv: bool):
        super().__init__()
        self.channels = channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.use_conv else x


class ResBlock(TimestepBlock):
    """Residual block conditioned on emb: x + conv(act(norm(conv(act(norm(x))) (+)= emb))).

    With use_scale_shift_norm the embedding acts as AdaGN, norm(h) * (1 + s) + b (ADM Sec. 3);
    otherwise it is added before the second norm (DDPM). up/down make it a BigGAN-style
    resampling block (ADM: resblock_updown). Shapes: x (B, C, H, W), emb (B, E) -> (B, C_out, H', W').
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        *,
        use_conv: bool = False,
        use_scale_shift_norm: bool = False,
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
        up: bool = False,
        down: bool = False,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_checkpoint = use_checkpoint

        self.in_layers = nn.Sequential(
            GroupNorm32(norm_groups, channels, eps=norm_eps),
            nn.SiLU(),
            nn.Conv2d(channels, self.out_channels, 3, padding=1),
        )
        self.updown = up or down
        if up:
            self.h_upd: nn.Module = Upsample(channels, use_conv=False)
            self.x_upd: nn.Module = Upsample(channels, use_conv=False)
        elif down:
            self.h_upd = Downsample(channels, use_conv=False)
            self.x_upd = Downsample(channels, use_conv=False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            nn.Linear(emb_channels, 2 * self.out_channels if use_scale_shift_norm else self.out_channels),
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(norm_groups, self.out_channels, eps=norm_eps),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1)),
        )
        if self.out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        elif use_conv:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 3, padding=1)
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)

    def _forward(self, x: Tensor, emb: Tensor) -> Tensor:
        norm, act, conv = self.in_layers
        h = act(norm(x))
        if self.updown:  # resample after the activation, before the conv (ADM / BigGAN)
            h, x = self.h_upd(h), self.x_upd(x)
        h = conv(h)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]  # (B, C_out or 2 C_out, 1, 1)
        out_norm, out_act, out_dropout, out_conv = self.out_layers
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = torch.addcmul(shift, out_norm(h), 1 + scale)
        else:
            h = out_norm(h + emb_out)
        h = out_conv(out_dropout(out_act(h)))
        return self.skip_connection(x) + h
