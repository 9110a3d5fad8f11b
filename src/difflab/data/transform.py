"""Per-image shaping on float32 HWC arrays in [0, 1]: channel conversion, centre crop, resize with a PIL filter."""

from __future__ import annotations

import numpy as np
from PIL import Image

_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

# ITU-R 601-2 luma, the weights PIL uses for convert("L").
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def convert_channels(img: np.ndarray, channels: str) -> np.ndarray:
    """(H, W, C) with C in {1, 3} -> (H, W, 1) for 'L' (ITU-R 601-2 luma) or (H, W, 3) for 'RGB' (gray repeated)."""
    c = img.shape[-1]
    if channels == "L" and c == 3:
        return (img @ _LUMA)[..., None].astype(np.float32)
    if channels == "RGB" and c == 1:
        return np.repeat(img, 3, axis=-1)
    return img


def center_crop(img: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (S, S, C), the largest centred square, S = min(H, W)."""
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return img[top : top + s, left : left + s]


def resize(img: np.ndarray, size: int, filter: str) -> np.ndarray:
    """(H, W, C) float32 in [0, 1] -> (size, size, C), each channel resampled in PIL's 32-bit float mode."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    resample = _FILTERS[filter]
    planes = []
    for c in range(img.shape[-1]):
        plane = Image.fromarray(np.ascontiguousarray(img[..., c], dtype=np.float32))
        planes.append(np.asarray(plane.resize((size, size), resample), dtype=np.float32))
    # Bicubic and Lanczos overshoot at edges; clip back into the valid range.
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0)


def shape_image(img: np.ndarray, *, channels: str, image_size: int | None, crop: str, filter: str) -> np.ndarray:
    """Apply the DataConfig's channel conversion, crop and resize to one (H, W, C) image in [0, 1]."""
    if channels != "auto":
        img = convert_channels(img, channels)
    if crop == "center":
        img = center_crop(img)
    if image_size is not None:
        img = resize(img, image_size, filter)
    return img


def shape_images(images: np.ndarray, *, channels: str, image_size: int | None, crop: str, filter: str) -> np.ndarray:
    """shape_image over a batch (N, H, W, C); a channel conversion alone is done on the whole array at once."""
    if image_size is None and crop == "none":
        return convert_channels(images, channels) if channels != "auto" else images
    return np.stack([shape_image(img, channels=channels, image_size=image_size, crop=crop, filter=filter) for img in images])
