"""`digits-color`: a SYNTHETIC colour data set made from the 8x8 digits, for colorization (docs/restoration.md).

Each digit's intensity v in [0, 1] (the stroke) is painted in one colour per image on a black background:
rgb = v * HSV(hue, saturation, value). The colour is random per image but tied to the class, so that colorization has
a learnable answer (the shape tells the class, the class tells the hue) and an irreducible random part:

    hue        = digit / 10 + U(-0.04, 0.04)   (turns; ten hues 36 degrees apart, +-14 degrees of jitter)
    saturation = U(0.6, 1.0),   value = U(0.7, 1.0)

Tints are drawn once per image of the 1,797 digits from default_rng(TINT_SEED), in the original order, so an image
keeps its colour whatever the split; the split is digits' own fixed 1,500 / 297 (data/digits.py). Labels are the digits.
"""

from __future__ import annotations

import numpy as np

from difflab.data.digits import DIGITS_CLASS_NAMES, DIGITS_MAX_VALUE, DIGITS_NUM_EXAMPLES, digits_split_indices

TINTED_DIGITS_NAME = "digits-color"
TINT_SEED = 4
HUE_JITTER = 0.04
SATURATION_RANGE = (0.6, 1.0)
VALUE_RANGE = (0.7, 1.0)


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB (all in [0, 1], hue in turns), (N,) each -> (N, 3); the colorsys formulas."""
    h = np.mod(h, 1.0)
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack([
        np.stack([v, t, p], -1), np.stack([q, v, p], -1), np.stack([p, v, t], -1),
        np.stack([p, q, v], -1), np.stack([t, p, v], -1), np.stack([v, p, q], -1),
    ])  # (6, N, 3)
    return table[i, np.arange(len(h))]


def tints(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 3) RGB tints in [0, 1] for labels (N,): the class hue with jitter, random saturation and value."""
    n = len(labels)
    hue = labels / 10.0 + rng.uniform(-HUE_JITTER, HUE_JITTER, n)
    sat = rng.uniform(*SATURATION_RANGE, n)
    val = rng.uniform(*VALUE_RANGE, n)
    return hsv_to_rgb(hue, sat, val)


def tinted_digits_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (N, 8, 8, 3) in [0, 1], labels int64 (N,)) of the digits split, tinted per image."""
    from sklearn.datasets import load_digits  # slow to import

    bunch = load_digits()
    labels_all = bunch.target.astype(np.int64)
    assert len(labels_all) == DIGITS_NUM_EXAMPLES
    rgb = tints(labels_all, np.random.default_rng(TINT_SEED)).astype(np.float32)  # (1797, 3), one per image
    idx = digits_split_indices(split)
    v = (bunch.images[idx] / DIGITS_MAX_VALUE).astype(np.float32)  # (N, 8, 8)
    return v[..., None] * rgb[idx, None, None, :], labels_all[idx]


def tinted_source(cfg) -> tuple[np.ndarray, np.ndarray, int, tuple[str, ...]]:
    """The `_source` tuple of data/dataset.py for data.name = 'digits-color', shaped by the DataConfig."""
    from difflab.data.transform import shape_images

    images, labels = tinted_digits_arrays(cfg.split)
    opts = dict(channels=cfg.channels, image_size=cfg.image_size, crop=cfg.crop, filter=cfg.resize_filter)
    return shape_images(images, **opts), labels, len(DIGITS_CLASS_NAMES), DIGITS_CLASS_NAMES
