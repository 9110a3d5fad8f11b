"""Per-image quality of a restoration against the clean target, for images in [-1, 1]."""

from __future__ import annotations

import torch
from torch import Tensor


def mse(x: Tensor, ref: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error per image (B,), float64; with mask (B or 1, 1, H, W), only over pixels where mask == 1."""
    d = (x.double() - ref.double()) ** 2
    if mask is None:
        return d.flatten(1).mean(1)
    w = mask.double().expand(x.shape[0], 1, *x.shape[-2:]).expand_as(d)
    return (d * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp(min=1)


def psnr(x: Tensor, ref: Tensor, mask: Tensor | None = None) -> Tensor:
    """Peak signal-to-noise ratio per image (B,) in dB for the value range [-1, 1] (peak-to-peak 2): 10 log10(4 / MSE)."""
    return 10 * torch.log10(4.0 / mse(x, ref, mask).clamp(min=1e-12))


def color_error(x: Tensor, ref: Tensor) -> Tensor:
    """Mean per-pixel colour error per image (B,): the Euclidean RGB distance on the 0..1 scale, averaged over pixels."""
    d = ((x.double() - ref.double()) / 2).pow(2).sum(1).sqrt()  # (B, H, W)
    return d.flatten(1).mean(1)
