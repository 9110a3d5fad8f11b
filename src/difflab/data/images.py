"""`save_image_grid`: a batch in [-1, 1] -> one PNG grid, nearest-neighbour upscaled so tiny images stay visible."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from difflab.data.atomic import atomic_write
from difflab.data.npz import to_uint8_nhwc

MIN_CELL_PIXELS = 32  # default upscale makes each image at least this many pixels wide (8x8 digits -> 32x32)


def make_grid(images: np.ndarray, nrow: int, padding: int, pad_value: int) -> np.ndarray:
    """uint8 (N, H, W, C) -> uint8 (rows*(H+p)+p, nrow*(W+p)+p, C), row-major, `padding` pixels between cells."""
    n, h, w, c = images.shape
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), pad_value, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top : top + h, left : left + w] = images[i]
    return grid


def save_image_grid(
    x: Tensor,
    path: str | Path,
    nrow: int | None = None,
    upscale: int | None = None,
    padding: int = 2,
    pad_value: int = 255,
) -> Path:
    """Write x (N, C, H, W) in [-1, 1] (C = 1 or 3) as a PNG grid of `nrow` columns (default ceil(sqrt(N))), atomically.

    Each image is enlarged by the integer `upscale` with nearest neighbour (default: the smallest factor
    making it at least MIN_CELL_PIXELS wide); `padding` pixels of gray level `pad_value` separate cells.
    """
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[0] == 0 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N, C, H, W) with N >= 1 and C = 1 or 3; got shape {tuple(x.shape)}")
    images = to_uint8_nhwc(x)  # (N, H, W, C)
    n, h, w, _ = images.shape
    if upscale is None:
        upscale = max(1, math.ceil(MIN_CELL_PIXELS / max(1, min(h, w))))
    if upscale < 1:
        raise ValueError(f"upscale must be >= 1; got {upscale}")
    if upscale > 1:
        images = images.repeat(upscale, axis=1).repeat(upscale, axis=2)
    nrow = nrow if nrow is not None else math.ceil(math.sqrt(n))
    grid = make_grid(images, max(1, min(nrow, n)), padding, pad_value)
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    return atomic_write(path, lambda f: img.save(f, format="PNG"))
