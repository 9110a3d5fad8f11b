"""Image sets and reference statistics files: what evaluation compares, once a spec has been read.

`load_images` reads an .npz of images (guided-diffusion's layout: arr_0 uint8 NHWC, optional arr_1 labels), an
image folder or a data set with an optional split (e.g. 'digits:test'); a path means all of its images unless written
'path:train' / 'path:test', and a bare data set name means its test split (held-out data, as everywhere in difflab).
Statistics files are written by `difflab stats` (.npz with format=difflab-feature-stats-v1). Sampling a run folder
given as a set of images is the pipelines' business (difflab.pipelines.evaluate), since it needs the run.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from difflab.data import DataConfig, load_dataset, parse_data_spec
from difflab.errors import UserError
from difflab.eval.metrics import FeatureStats, load_stats, save_stats
from difflab.eval.metrics.features import STATS_FORMAT

META_KEY = "difflab_meta"  # extra JSON entry in a stats file (no '/', so load_stats ignores it)


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Images x (N, C, H, W) float32 in [-1, 1], labels y (N,) or None, and where they came from."""

    x: torch.Tensor
    y: torch.Tensor | None
    source: str
    kind: str  # "run" | "npz" | "folder" | "data"
    info: dict = field(default_factory=dict)  # for a run: sampler, steps, nfe, seconds, seed, step

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.x.shape[1:])

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True, eq=False)
class StatsRef:
    """Reference statistics read from a `difflab stats` file."""

    stats: dict[str, FeatureStats]
    source: str
    meta: dict  # features, image_shape, n_images, data (empty for files written without metadata)

    @property
    def n(self) -> int:
        return max(st.n for st in self.stats.values())


def is_stats_file(path: Path) -> bool:
    """An .npz written by save_stats (its 'format' entry), read without unpickling."""
    if path.suffix.lower() != ".npz" or not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            return "format" in z.files and str(z["format"]) == STATS_FORMAT
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, AttributeError):
        return False  # not an archive: the image reader gives the precise error


def load_images(spec: str, role: str = "samples") -> ImageSet:
    """An .npz, an image folder or a data split (see the module doc) as images in [-1, 1]."""
    path = Path(spec).expanduser()
    if path.exists():
        kind = "folder" if path.is_dir() else "npz"
        cfg = DataConfig(name=str(path), split="all")
    else:
        cfg = parse_data_spec(spec, DataConfig(split="all"))
        p = Path(cfg.name).expanduser()
        if cfg.name != "digits" and not p.exists():
            raise UserError(f"--{role} {spec}: no such file or folder; give a run folder, an .npz (arr_0 uint8 NHWC), "
                            "an image folder or a data split such as digits:test")
        kind = "folder" if p.is_dir() else "npz" if p.suffix.lower() == ".npz" else "data"
    data = load_dataset(cfg)
    return ImageSet(data.x, data.y, spec, kind)


def check_same_images(samples: ImageSet, ref: ImageSet | StatsRef) -> None:
    """Both sets must have one channel count and size (a stats file records the shape it was made from)."""
    shape = ref.image_shape if isinstance(ref, ImageSet) else ref.meta.get("image_shape")
    if shape is None:
        return
    if tuple(samples.image_shape) != tuple(shape):
        s, r = "x".join(map(str, samples.image_shape)), "x".join(map(str, shape))
        raise UserError(f"the samples are {s} images (CxHxW) but the reference {ref.source} is {r}; "
                        "compare image sets of the same channel count and size")


def save_reference_stats(path: str | Path, stats: dict[str, FeatureStats], meta: dict) -> Path:
    """save_stats, plus a JSON entry naming the feature source and the image shape the stats came from."""
    path = Path(path)
    save_stats(path, stats)
    from difflab.data.atomic import atomic_write

    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays[META_KEY] = np.array(json.dumps(meta))
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def read_reference_stats(path: Path) -> StatsRef:
    stats = load_stats(path)
    meta: dict = {}
    with np.load(path, allow_pickle=False) as z:
        if META_KEY in z.files:
            try:
                meta = json.loads(str(z[META_KEY]))
            except json.JSONDecodeError:
                raise UserError(f"the metadata of feature stats {path} are damaged; recreate the file with `difflab stats`") from None
    if not stats:
        raise UserError(f"feature stats file {path} holds no statistics; recreate it with `difflab stats`")
    return StatsRef(stats, str(path), meta)
