"""Data layer: built-in digits, image folders and .npz files loaded into memory as tensors in [-1, 1]."""

from difflab.data.atomic import atomic_write
from difflab.data.config import SPLITS, DataConfig, parse_data_spec
from difflab.data.dataset import ImageData, load_dataset, split_indices
from difflab.data.digits import (
    DIGITS_CLASS_NAMES,
    DIGITS_NUM_TEST,
    DIGITS_NUM_TRAIN,
    DIGITS_SPLIT_SEED,
    digits_split_indices,
    load_digits_split,
)
from difflab.data.folder import IMAGE_EXTENSIONS
from difflab.data.images import save_image_grid
from difflab.data.npz import to_uint8_nhwc, write_npz_samples

__all__ = [
    "DIGITS_CLASS_NAMES",
    "DIGITS_NUM_TEST",
    "DIGITS_NUM_TRAIN",
    "DIGITS_SPLIT_SEED",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "DataConfig",
    "ImageData",
    "atomic_write",
    "digits_split_indices",
    "load_dataset",
    "load_digits_split",
    "parse_data_spec",
    "save_image_grid",
    "split_indices",
    "to_uint8_nhwc",
    "write_npz_samples",
]
