"""scikit-learn's 8x8 handwritten digits (bundled with scikit-learn, no download) with a fixed train/test split.

1,797 grayscale 8x8 images with integer values 0..16, labels 0..9. The split never changes:
`numpy.random.default_rng(DIGITS_SPLIT_SEED).permutation(1797)`; its first DIGITS_NUM_TEST (297)
indices are the test set, the other 1,500 the train set, each kept in the original order.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from difflab.errors import UserError

DIGITS_SPLIT_SEED = 0
DIGITS_NUM_EXAMPLES = 1797
DIGITS_NUM_TEST = 297
DIGITS_NUM_TRAIN = DIGITS_NUM_EXAMPLES - DIGITS_NUM_TEST  # 1500
DIGITS_MAX_VALUE = 16.0
DIGITS_CLASS_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))


def digits_split_indices(split: str) -> np.ndarray:
    """Sorted int64 indices into the 1,797 digits for 'train' (1,500), 'test' (297) or 'all'."""
    if split == "all":
        return np.arange(DIGITS_NUM_EXAMPLES, dtype=np.int64)
    perm = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(DIGITS_NUM_EXAMPLES)
    if split == "test":
        return np.sort(perm[:DIGITS_NUM_TEST]).astype(np.int64)
    if split == "train":
        return np.sort(perm[DIGITS_NUM_TEST:]).astype(np.int64)
    raise UserError(f"unknown digits split {split!r}: use 'train', 'test' or 'all'")


def digits_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (N, 8, 8, 1) in [0, 1] = value / 16, labels int64 (N,)) for one split."""
    from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import

    bunch = load_digits()
    idx = digits_split_indices(split)
    images = (bunch.images[idx] / DIGITS_MAX_VALUE).astype(np.float32)[..., None]
    return images, bunch.target[idx].astype(np.int64)


def load_digits_split(split: str) -> tuple[Tensor, Tensor]:
    """(x float32 (N, 1, 8, 8) in [-1, 1] = value / 8 - 1, y int64 (N,)) for 'train', 'test' or 'all'."""
    images, labels = digits_arrays(split)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous() * 2.0 - 1.0
    return x, torch.from_numpy(labels)
