"""Inpainting masks: (N, 1, H, W) float tensors with 1 where the pixel is KNOWN (kept) and 0 where it is to be filled.

This is RePaint's convention (its `gt_keep_mask`: white = keep). Named masks for square images of side S:

- center: a centred square hole of side S // 2 (the 4x4 middle of an 8x8 digit);
- left:   the left half of the image is the hole (columns < S // 2), the right half is known;
- random: per image a random rectangular hole, height and width uniform in ceil(S/4)..S, position uniform
          (drawn from the generator passed in, so a seed fixes them; one can be the whole image);
- FILE:   an image file of size S x S (any mode, converted to gray): pixels >= 50% gray are known, darker ones the hole.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from difflab.errors import UserError

MASK_KINDS: tuple[str, ...] = ("center", "left", "random")


def center_mask(size: int) -> Tensor:
    """(1, 1, S, S): 0 on the centred square of side S // 2 (at least 1 pixel), 1 elsewhere."""
    m = torch.ones(1, 1, size, size)
    h = max(1, size // 2)
    lo = (size - h) // 2
    m[..., lo:lo + h, lo:lo + h] = 0
    return m


def left_mask(size: int) -> Tensor:
    """(1, 1, S, S): 0 on the left half (columns < max(1, S // 2)), 1 on the right half."""
    m = torch.ones(1, 1, size, size)
    m[..., : max(1, size // 2)] = 0
    return m


def random_box_masks(n: int, size: int, generator: torch.Generator | None = None) -> Tensor:
    """(n, 1, S, S): a rectangular hole per image, sides uniform in ceil(S/4)..S, position uniform; from `generator`.

    Draws, in order: heights (n,), widths (n,), tops (n,) and lefts (n,) as uniforms in [0, 1) (float64),
    so the masks of a batch are one fixed function of the generator's state.
    """
    lo = max(1, math.ceil(size / 4))
    u = torch.rand(4, n, generator=generator, dtype=torch.float64)
    h = (lo + (u[0] * (size - lo + 1)).floor()).long().clamp(max=size)
    w = (lo + (u[1] * (size - lo + 1)).floor()).long().clamp(max=size)
    top = (u[2] * (size - h + 1)).floor().long()
    left = (u[3] * (size - w + 1)).floor().long()
    rows = torch.arange(size)
    inside_r = (rows[None, :] >= top[:, None]) & (rows[None, :] < (top + h)[:, None])  # (n, S)
    inside_c = (rows[None, :] >= left[:, None]) & (rows[None, :] < (left + w)[:, None])
    hole = inside_r[:, :, None] & inside_c[:, None, :]  # (n, S, S)
    return (~hole).float()[:, None]


def read_mask_file(path: str | Path, size: int) -> Tensor:
    """(1, 1, S, S) from an image file: gray >= 0.5 known (1), darker the hole (0). Wrong size -> UserError."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"mask file {path} does not exist: give center, left, random or an existing image file (white = known)")
    try:
        with Image.open(path) as img:
            gray = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"mask file {path} is not a readable image ({type(e).__name__}); save it as a PNG with white = known") from None
    if gray.shape != (size, size):
        raise UserError(f"mask file {path} is {gray.shape[1]}x{gray.shape[0]} but the images are {size}x{size}: "
                        f"give a {size}x{size} mask (white = known, black = to fill)")
    return torch.from_numpy((gray >= 0.5).astype(np.float32))[None, None]


def make_masks(spec: str, n: int, size: int, generator: torch.Generator | None = None) -> Tensor:
    """(n, 1, S, S) keep-masks for `spec` in center | left | random | FILE; see the module doc."""
    if spec == "center":
        return center_mask(size).expand(n, -1, -1, -1).clone()
    if spec == "left":
        return left_mask(size).expand(n, -1, -1, -1).clone()
    if spec == "random":
        return random_box_masks(n, size, generator)
    if spec in ("", None):
        raise UserError(f"empty --mask: give one of {', '.join(MASK_KINDS)} or an image file (white = known)")
    return read_mask_file(spec, size).expand(n, -1, -1, -1).clone()
