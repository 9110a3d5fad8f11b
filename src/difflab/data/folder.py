"""Image folders: class sub-folders give labels (sorted names -> 0..K-1); a flat folder of images is unlabelled.

Only files whose extension is in IMAGE_EXTENSIONS (any case) are read; other files (README, CSV, ...)
and hidden files or folders (names starting with '.') are ignored. Inside a class folder, images are
found recursively. Every image is checked with PIL's `verify` and then fully decoded with `load`, so a
corrupt or truncated file is an error naming the file, never silently padded (difflab relies on PIL's
default `ImageFile.LOAD_TRUNCATED_IMAGES = False` and never changes it).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFile

from difflab.data.config import DataConfig
from difflab.data.transform import shape_image
from difflab.errors import UserError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"}
)
_GRAY_MODES = frozenset({"1", "L", "LA", "La"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_COLOR_MODES = frozenset({"P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})


class FolderImages(NamedTuple):
    """Decoded images of a folder before splitting; labels and class names only for class sub-folders."""

    images: np.ndarray  # float32 (N, H, W, C) in [0, 1]
    labels: np.ndarray | None  # int64 (N,)
    class_names: tuple[str, ...] | None
    files: tuple[Path, ...]


def _rel(path: Path, root: Path) -> str:
    """`path` relative to the data folder, e.g. 'cat/1.png', to tell same-named files in two classes apart."""
    return path.relative_to(root).as_posix()


def _is_image(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS


def _visible_dirs(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _images_under(folder: Path) -> list[Path]:
    """Image files anywhere below `folder` (hidden folders skipped), sorted by relative path."""
    found = []
    for p in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in p.relative_to(folder).parts[:-1]):
            continue
        if _is_image(p):
            found.append(p)
    return found


def list_image_folder(root: Path) -> tuple[list[Path], list[int] | None, tuple[str, ...] | None]:
    """(files, labels or None, class names or None) for a flat folder or one with class sub-folders."""
    if not root.exists():
        raise UserError(f"data path {root} does not exist: give 'digits', an image folder or an .npz file")
    top = sorted((p for p in root.iterdir() if _is_image(p)), key=lambda p: p.name)
    classes = [(d, _images_under(d)) for d in _visible_dirs(root)]
    if top:
        sub = next((d for d, class_files in classes if class_files), None)
        if sub is not None:
            raise UserError(
                f"image folder {root} has both images ({top[0].name}) and class sub-folders ({sub.name}/): "
                "move the loose images into a class folder, or move the sub-folders out"
            )
        return top, None, None
    if not any(class_files for _, class_files in classes):
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise UserError(
            f"image folder {root} is empty (no image files with extensions {exts}): "
            "put images in it, or class sub-folders of images"
        )
    empty = next((d for d, class_files in classes if not class_files), None)
    if empty is not None:
        raise UserError(
            f"class folder {empty} has no images while other class folders do: add images to it, "
            "or move it out of the data folder"
        )
    files: list[Path] = []
    labels: list[int] = []
    for k, (_, class_files) in enumerate(classes):
        files.extend(class_files)
        labels.extend([k] * len(class_files))
    return files, labels, tuple(d.name for d, _ in classes)


def _decode(path: Path) -> Image.Image:
    """Open, verify and fully decode one image; any failure is a UserError naming the file."""
    try:
        data = path.read_bytes()
    except OSError as e:  # a file-system fault, not a damaged image: say which
        raise UserError(f"cannot read image {path}: {e.strerror or e}; make it readable (chmod u+r) or remove it from the data folder") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()  # checks structure and checksums (e.g. PNG CRCs) without decoding
        im = Image.open(io.BytesIO(data))
        im.load()  # decodes every pixel; raises on truncated data since LOAD_TRUNCATED_IMAGES is False
        return im
    except MemoryError:
        raise
    except Image.DecompressionBombError as e:
        raise UserError(f"image {path} is too large to decode safely ({e}): shrink it or remove it from the data folder") from None
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, struct.error, zlib.error, ...)
        raise UserError(
            f"cannot read image {path} ({type(e).__name__}: {e}): the file is corrupt or truncated; "
            "replace or delete it"
        ) from None


def _native_channels(im: Image.Image, path: Path) -> str:
    """'L' or 'RGB': the channel set an image naturally has."""
    if im.mode in _GRAY_MODES or im.mode in _SIXTEEN_BIT_MODES:
        return "L"
    if im.mode in _COLOR_MODES:
        return "RGB"
    raise UserError(
        f"image {path} has PIL mode {im.mode!r}, which difflab does not read: "
        "save it as an 8-bit grayscale or RGB PNG"
    )


def _to_array(im: Image.Image, channels: str) -> np.ndarray:
    """PIL image -> float32 (H, W, C) in [0, 1] with C = 1 for 'L' and 3 for 'RGB' (alpha dropped)."""
    if im.mode in _SIXTEEN_BIT_MODES:
        # convert('L') would clip 16-bit values at 255; scale them instead.
        arr = np.asarray(im, dtype=np.float32)[..., None] / 65535.0
        return np.repeat(arr, 3, axis=-1) if channels == "RGB" else arr
    arr = np.asarray(im.convert(channels), dtype=np.float32) / 255.0
    return arr[..., None] if arr.ndim == 2 else arr


def load_image_folder(cfg: DataConfig) -> FolderImages:
    """Decode every image of the folder `cfg.name` into memory, shaped by cfg (channels, crop, image_size)."""
    root = Path(cfg.name).expanduser()
    files, labels, class_names = list_image_folder(root)
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        warnings.warn(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES was set to True by other code; truncated images "
            "in the data folder may be silently padded",
            stacklevel=2,
        )
    arrays: list[np.ndarray] = []
    first_mode: tuple[Path, str] | None = None
    first_size: tuple[Path, tuple[int, int]] | None = None
    for path in files:
        with _decode(path) as im:
            native = _native_channels(im, path)
            if first_mode is None:
                first_mode = (path, native)
            elif cfg.channels == "auto" and native != first_mode[1]:
                raise UserError(
                    f"image folder {root} mixes grayscale and colour images ({_rel(first_mode[0], root)} is "
                    f"{first_mode[1]}, {_rel(path, root)} is {native}): set data.channels to 'L' or 'RGB'"
                )
            arr = _to_array(im, native if cfg.channels == "auto" else cfg.channels)
        arr = shape_image(arr, channels=cfg.channels, image_size=cfg.image_size, crop=cfg.crop, filter=cfg.resize_filter)
        h, w = arr.shape[:2]
        if first_size is None:
            first_size = (path, (h, w))
            if h != w:
                raise UserError(
                    f"image {path} is {w}x{h} (width x height), not square: set data.image_size to resize "
                    "to a square, or data.crop to 'center'"
                )
        elif (h, w) != first_size[1]:
            (fh, fw) = first_size[1]
            raise UserError(
                f"image folder {root} has images of different sizes ({_rel(first_size[0], root)} is {fw}x{fh}, "
                f"{_rel(path, root)} is {w}x{h}): set data.image_size to resize them all to one size"
            )
        arrays.append(arr)
    images = np.stack(arrays).astype(np.float32, copy=False)
    y = np.asarray(labels, dtype=np.int64) if labels is not None else None
    return FolderImages(images, y, class_names, tuple(files))
