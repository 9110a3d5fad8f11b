"""`load_dataset`: a DataConfig -> `ImageData`, every image in memory as one float32 tensor in [-1, 1].

Data sets here are small (digits, folders of a few thousand images, .npz sample files), so the whole
split is decoded up front; training then indexes tensors and never touches the disk.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from difflab.data.config import DataConfig
from difflab.data.digits import DIGITS_CLASS_NAMES, digits_arrays
from difflab.data.folder import load_image_folder
from difflab.data.npz import read_npz
from difflab.data.transform import shape_images
from difflab.errors import UserError


@dataclasses.dataclass(frozen=True, eq=False)
class ImageData:
    """Images x float32 (N, C, H, W) in [-1, 1]; labels y int64 (N,) in 0..num_classes-1, or None when unlabelled."""

    x: Tensor
    y: Tensor | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None

    @property
    def channels(self) -> int:
        """C: 1 for grayscale, 3 for RGB."""
        return int(self.x.shape[1])

    @property
    def image_size(self) -> int:
        """H (= W; images are square)."""
        return int(self.x.shape[-1])

    def __len__(self) -> int:
        return int(self.x.shape[0])


def split_indices(n: int, split: str, test_fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of `split` among n items: a default_rng(seed) permutation, the first round(n * test_fraction) are test."""
    if split == "all":
        return np.arange(n, dtype=np.int64)
    n_test = int(round(n * test_fraction))
    perm = np.random.default_rng(seed).permutation(n)
    idx = perm[:n_test] if split == "test" else perm[n_test:]
    if idx.size == 0:
        raise UserError(
            f"the '{split}' split is empty ({n} images, data.test_fraction={test_fraction}): "
            "change data.test_fraction, or use data.split 'all'"
        )
    return np.sort(idx).astype(np.int64)


def _source(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray | None, int | None, tuple[str, ...] | None]:
    """(images float32 (N, H, W, C) in [0, 1], labels, num_classes, class_names) of the chosen split."""
    if cfg.name == "digits":
        images, labels = digits_arrays(cfg.split)
        opts = dict(channels=cfg.channels, image_size=cfg.image_size, crop=cfg.crop, filter=cfg.resize_filter)
        return shape_images(images, **opts), labels, len(DIGITS_CLASS_NAMES), DIGITS_CLASS_NAMES
    if cfg.name == "digits-color":  # synthetic: digits tinted per image (data/tinted.py)
        from difflab.data.tinted import tinted_source

        return tinted_source(cfg)
    path = Path(cfg.name).expanduser()
    if not path.exists():
        hint = " (the built-in data set is spelled 'digits')" if cfg.name.strip().lower() == "digits" else ""
        raise UserError(f"data path {path} does not exist{hint}: give 'digits', an image folder or an .npz file")
    if path.is_dir():
        folder = load_image_folder(cfg)
        images, labels, names = folder.images, folder.labels, folder.class_names
        num_classes = len(names) if names is not None else None
    elif path.suffix.lower() == ".npz":
        npz = read_npz(cfg)
        images, labels, names, num_classes = npz.images, npz.labels, None, npz.num_classes
    else:
        raise UserError(f"data path {path} is a file but not an .npz file: give 'digits', an image folder or an .npz file")
    idx = split_indices(images.shape[0], cfg.split, cfg.test_fraction, cfg.split_seed)
    return images[idx], labels[idx] if labels is not None else None, num_classes, names


def load_dataset(cfg: DataConfig) -> ImageData:
    """Load the split `cfg.split` of `cfg.name` into memory as ImageData (x in [-1, 1], labels when present)."""
    images, labels, num_classes, names = _source(cfg)
    if cfg.labels == "ignore":
        labels, num_classes, names = None, None, None
    elif cfg.labels == "require" and labels is None:
        raise UserError(
            f"data {cfg.name} has no labels but data.labels is 'require': put the images in class "
            "sub-folders (or add arr_1 labels to the .npz), or set data.labels to 'auto'"
        )
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2).contiguous()
    x = x.mul_(2.0).sub_(1.0).clamp_(-1.0, 1.0)
    y = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)) if labels is not None else None
    return ImageData(x=x, y=y, num_classes=num_classes, class_names=names)
