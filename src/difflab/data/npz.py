"""Image arrays in .npz files, in guided-diffusion's layout: arr_0 images (N, H, W, C) uint8, optional arr_1 labels.

Reading accepts arr_0 as (N, H, W) grayscale or (N, H, W, C) with C = 1 or 3, and
- integer arrays with values 0..255 (mapped linearly to [-1, 1]);
- float arrays in [-1, 1] or [0, 1]. A float array with negative values is read as -1..1; one whose
  values all lie in [0, 1] could be either, so data.float_range must then say which ('0..1' or '-1..1').
Labels arr_1 are non-negative integers (N,), num_classes = max + 1. Files are never unpickled.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from numpy.lib.npyio import NpzFile
from torch import Tensor

from difflab.data.atomic import atomic_write
from difflab.data.config import DataConfig
from difflab.data.transform import shape_images
from difflab.errors import UserError

_FLOAT_TOL = 1e-4  # float images may overshoot their range by rounding error


class NpzImages(NamedTuple):
    """Images of an .npz file before splitting."""

    images: np.ndarray  # float32 (N, H, W, C) in [0, 1]
    labels: np.ndarray | None  # int64 (N,)
    num_classes: int | None


def _open(path: Path) -> dict[str, np.ndarray]:
    """arr_0 and (if present) arr_1 of the file, decompressed; any failure is a UserError."""
    fix = "write it with numpy.savez(path, arr_0=images_uint8_nhwc)"
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{path} is not a valid .npz file ({type(e).__name__}: {e}): {fix}") from None
    if not isinstance(f, NpzFile):
        raise UserError(f"{path} holds a single .npy array, not an .npz archive: {fix}")
    with f:
        if "arr_0" not in f.files:
            keys = ", ".join(repr(k) for k in f.files) or "nothing"
            raise UserError(
                f".npz file {path} has no 'arr_0' (it holds {keys}): save the images as arr_0, "
                "e.g. numpy.savez(path, images, labels)"
            )
        try:
            return {k: f[k] for k in ("arr_0", "arr_1") if k in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
            raise UserError(f"{path} is not a valid .npz file ({type(e).__name__}: {e}): {fix}") from None


def _images_to_unit(arr: np.ndarray, path: Path, float_range: str) -> np.ndarray:
    """arr_0 -> float32 (N, H, W, C) in [0, 1], with checks on shape, dtype and value range."""
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        hint = " (it looks like NCHW: transpose to NHWC)" if arr.ndim == 4 and arr.shape[1] in (1, 3) else ""
        raise UserError(
            f"arr_0 in {path} has shape {tuple(arr.shape)}{hint}: images must be (N, H, W) or (N, H, W, C) with C = 1 or 3"
        )
    if min(arr.shape[:3]) == 0:
        raise UserError(f"arr_0 in {path} is empty (shape {tuple(arr.shape)}): write at least one image")
    if arr.dtype.kind in "ui":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise UserError(f"integer images in {path} must have values 0..255; got {lo}..{hi}: rescale them to uint8")
        return arr.astype(np.float32) / 255.0
    if arr.dtype.kind != "f":
        raise UserError(f"arr_0 in {path} has dtype {arr.dtype}: save images as uint8 0..255 or float in [-1, 1]")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise UserError(f"arr_0 in {path} has {bad} NaN or Inf values: fix or drop those images")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1 - _FLOAT_TOL or hi > 1 + _FLOAT_TOL:
        raise UserError(
            f"float images in {path} have values {lo:.4g}..{hi:.4g}, outside [-1, 1]: "
            "save them in [-1, 1], [0, 1], or as uint8 0..255"
        )
    rng = float_range
    if rng == "auto":
        if lo >= 0.0:
            raise UserError(
                f"float images in {path} have values only in [0, 1], which may mean 0..1 or -1..1: "
                "set data.float_range to '0..1' or '-1..1'"
            )
        rng = "-1..1"
    if rng == "0..1" and lo < -_FLOAT_TOL:
        raise UserError(
            f"float images in {path} have negative values ({lo:.4g}) but data.float_range is '0..1': set it to '-1..1'"
        )
    unit = (arr.astype(np.float32) + 1.0) / 2.0 if rng == "-1..1" else arr.astype(np.float32)
    return np.clip(unit, 0.0, 1.0)


def _labels(arr: np.ndarray, n: int, path: Path) -> np.ndarray:
    """arr_1 -> int64 (N,), checked: 1-D, one per image, finite non-negative integers."""
    if arr.ndim != 1:
        raise UserError(
            f"arr_1 (labels) in {path} has shape {tuple(arr.shape)}: labels must be a 1-D array, one per image"
        )
    if arr.shape[0] != n:
        raise UserError(
            f"arr_1 in {path} has {arr.shape[0]} labels for {n} images in arr_0: give exactly one label per image"
        )
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise UserError(f"arr_1 (labels) in {path} has NaN or Inf values: labels must be integers 0..K-1")
        if not (arr == np.round(arr)).all():
            raise UserError(f"arr_1 (labels) in {path} has non-integer values: labels must be integers 0..K-1")
    elif arr.dtype.kind not in "ui":
        raise UserError(f"arr_1 (labels) in {path} has dtype {arr.dtype}: labels must be integers 0..K-1")
    if n and arr.min() < 0:
        raise UserError(f"arr_1 in {path} has negative labels ({int(arr.min())}): labels must be integers 0..K-1")
    return arr.astype(np.int64)


def read_npz(cfg: DataConfig) -> NpzImages:
    """Load and check the .npz file `cfg.name`, shaped by cfg (channels, crop, image_size)."""
    path = Path(cfg.name).expanduser()
    arrays = _open(path)
    unit = _images_to_unit(arrays["arr_0"], path, cfg.float_range)
    unit = shape_images(unit, channels=cfg.channels, image_size=cfg.image_size, crop=cfg.crop, filter=cfg.resize_filter)
    if unit.shape[1] != unit.shape[2]:
        raise UserError(
            f"images in {path} are {unit.shape[2]}x{unit.shape[1]} (width x height), not square: "
            "set data.image_size, or data.crop to 'center'"
        )
    labels = None
    if "arr_1" in arrays and cfg.labels != "ignore":
        labels = _labels(arrays["arr_1"], unit.shape[0], path)
    num_classes = int(labels.max()) + 1 if labels is not None else None
    return NpzImages(unit, labels, num_classes)


def _numpy(a: np.ndarray | Tensor) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)


def to_uint8_nhwc(x: Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 (N, H, W, C), value = round((x + 1) * 127.5) clipped to 0..255."""
    if x.ndim != 4:
        raise ValueError(f"expected images (N, C, H, W); got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise UserError(
            "samples contain NaN or Inf values: the model or sampler diverged; check the checkpoint and sampler settings"
        )
    u = ((x.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return u.permute(0, 2, 3, 1).contiguous().numpy()


def write_npz_samples(
    path: str | Path, images_uint8_nhwc: np.ndarray | Tensor, labels: np.ndarray | Tensor | None = None
) -> Path:
    """Atomically write arr_0 = images (N, H, W, C) uint8 and, if given, arr_1 = labels int64 (N,); overwrites `path`."""
    images = _numpy(images_uint8_nhwc)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be uint8 (N, H, W, C) with C = 1 or 3; got {images.dtype} {tuple(images.shape)}")
    arrays = {"arr_0": images}
    if labels is not None:
        y = _numpy(labels)
        if y.ndim != 1 or y.shape[0] != images.shape[0] or y.dtype.kind not in "ui" or (y < 0).any():
            raise ValueError(f"labels must be non-negative integers (N,) with N = {images.shape[0]}; got {y.dtype} {tuple(y.shape)}")
        arrays["arr_1"] = y.astype(np.int64)
    return atomic_write(path, lambda f: np.savez(f, **arrays))
