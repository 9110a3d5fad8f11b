"""`DataConfig`: which images to load and how to shape them; `parse_data_spec` for 'name[:split]' strings."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, Optional, get_args

from difflab.configs import field
from difflab.errors import UserError

Split = Literal["train", "test", "all"]
Channels = Literal["auto", "L", "RGB"]
ResizeFilter = Literal["bicubic", "bilinear", "nearest", "box", "hamming", "lanczos"]
Crop = Literal["none", "center"]
Labels = Literal["auto", "ignore", "require"]
FloatRange = Literal["auto", "-1..1", "0..1"]

SPLITS: tuple[str, ...] = get_args(Split)
MAX_IMAGE_SIZE = 4096
_CHOICES: dict[str, tuple[str, ...]] = {
    "split": SPLITS,
    "channels": get_args(Channels),
    "resize_filter": get_args(ResizeFilter),
    "crop": get_args(Crop),
    "labels": get_args(Labels),
    "float_range": get_args(FloatRange),
}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which images to load (built-in digits, an image folder or an .npz file) and how to shape them."""

    name: str = field(
        "digits",
        help="'digits' (scikit-learn's 8x8 digits, bundled, no download), a folder of images "
        "(class sub-folders give labels), or an .npz file (arr_0 images, optional arr_1 labels)",
    )
    split: Split = field(
        "train",
        help="'train', 'test' or 'all'; digits have a fixed 1500/297 split, folders and .npz files "
        "a seeded split set by test_fraction and split_seed",
    )
    image_size: Optional[int] = field(
        None,
        help="resize every image to this square size in pixels; null keeps the native size "
        "(then all images must share one square size)",
    )
    channels: Channels = field(
        "auto",
        help="'L' (grayscale) or 'RGB' converts every image explicitly; 'auto' keeps the data's own "
        "mode (a folder mixing grayscale and colour images is then an error)",
    )
    resize_filter: ResizeFilter = field(
        "bicubic",
        help="PIL filter used when resizing: 'bicubic', 'bilinear', 'nearest' (keeps hard pixel "
        "edges), 'box', 'hamming' or 'lanczos'",
    )
    crop: Crop = field(
        "none",
        help="'center' crops each image to its largest centred square (before any resize); 'none' "
        "keeps the whole image, so image_size stretches non-square images",
    )
    labels: Labels = field(
        "auto",
        help="'auto' uses class labels when the data has them, 'ignore' drops them, 'require' "
        "fails when the data has none (for class-conditional models and classifiers)",
    )
    test_fraction: float = field(
        0.1,
        help="fraction of an image folder or .npz file held out as the 'test' split, in [0, 1); "
        "not used by digits, whose split is fixed",
    )
    split_seed: int = field(
        0,
        help="seed of the permutation that splits an image folder or .npz file into train and test",
    )
    float_range: FloatRange = field(
        "auto",
        help="value range of float images in an .npz file: '-1..1', '0..1', or 'auto' (values "
        "below 0 mean -1..1; values only in [0, 1] are ambiguous and must be set explicitly)",
    )

    def __post_init__(self) -> None:
        for key, choices in _CHOICES.items():
            value = getattr(self, key)
            if value not in choices:
                raise UserError(f"data.{key} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
        if not isinstance(self.name, str) or not self.name.strip():
            raise UserError(f"data.name must be 'digits', an image folder or an .npz file; got {self.name!r}")
        size = self.image_size
        if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
            raise UserError(f"data.image_size must be an integer number of pixels or null; got {size!r}")
        if size is not None and not 1 <= size <= MAX_IMAGE_SIZE:
            raise UserError(f"data.image_size must be between 1 and {MAX_IMAGE_SIZE}; got {size}")
        frac = self.test_fraction
        if not isinstance(frac, (int, float)) or isinstance(frac, bool) or not 0.0 <= frac < 1.0:
            raise UserError(f"data.test_fraction must be a number in [0, 1); got {frac!r}")
        seed = self.split_seed
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise UserError(f"data.split_seed must be a non-negative integer; got {seed!r}")


def parse_data_spec(spec: str, base: DataConfig | None = None) -> DataConfig:
    """'name[:split]' (e.g. 'digits:test', 'data/faces:train') -> DataConfig; other fields come from `base`.

    A bare name means every image of the set (split 'all') in every command; ':train' or ':test' picks a split.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UserError("empty data spec: give 'digits', an image folder or an .npz file, optionally with ':train', ':test' or ':all'")
    name, split = spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and head:
        if tail in SPLITS:
            name, split = head, tail
        elif not Path(spec).expanduser().exists():
            raise UserError(f"unknown split {tail!r} in data spec {spec!r}: write name[:split] with split one of {', '.join(SPLITS)}")
    base = base if base is not None else DataConfig()
    return dataclasses.replace(base, name=name, split=split if split is not None else "all")
