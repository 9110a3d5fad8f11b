"""The `digits` feature source: a small CNN trained on the digits train split, deterministic and cached.

FID on 8x8 digits through an ImageNet Inception-v3 upsampled to 299x299 measures mostly the upsampling;
a classifier trained on the data itself gives features that see digits (the role LeNet features play
for MNIST in the GAN literature). `DigitsFeatures` implements the FeatureExtractor protocol:

  "pool"    (N, 64)  penultimate activations (SiLU, so no unit is exactly constant) times a fixed scale that
                     gives them unit mean square per dimension on the training digits (as Inception's pool
                     features are O(1), so KID's kernel (x.y/d + 1)^3 is not dominated by the cube); for FID,
                     PR, DC, KID
  "logits"  (N, 10)  class logits, for the Inception Score on digits and the class accuracy of samples

Input: float images (N, 1, 8, 8) in [-1, 1], the layout of `load_digits_split`. Other sizes or channel
counts are an error, not resized: a digits classifier says nothing useful about other images.

Training is a pure function of `DigitsClassifierConfig` and the train split: weights are initialised
under a forked RNG seeded with `seed`, batches come from a seeded generator, no dropout, and it runs
on one CPU thread (restored afterwards), because multi-threaded reductions change the last bits with the
thread count (and make these tiny convolutions ~5x slower on a busy machine). The result is
cached as `<cache_dir>/digits-classifier/classifier.safetensors` + `classifier.json` (format, config,
SHA-256 fingerprint of the training data, test accuracy) and retrained when the JSON does not match.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save

from difflab.configs import field, to_dict
from difflab.data.atomic import atomic_write
from difflab.errors import UserError

CACHE_FORMAT = "difflab-digits-classifier-v1"
CACHE_SUBDIR = "digits-classifier"
IMAGE_SHAPE = (1, 8, 8)
NUM_CLASSES = 10


@dataclass(frozen=True)
class DigitsClassifierConfig:
    width: int = field(16, help="channels of the first conv; the next two have 2*width")
    feature_dim: int = field(64, help="size of the penultimate ('pool') features")
    epochs: int = field(25, help="passes over the 1,500 training digits")
    batch_size: int = field(64, help="images per optimiser step")
    max_lr: float = field(3e-3, help="peak learning rate of Adam's one-cycle schedule")
    shift: int = field(1, help="random translation of each batch by up to this many pixels (augmentation); 0 disables")
    seed: int = field(0, help="seed of the initial weights, the batch order and the shifts")

    def __post_init__(self):
        if min(self.width, self.feature_dim, self.epochs, self.batch_size) < 1 or self.shift < 0 or not self.max_lr > 0:
            raise UserError(f"digits classifier config needs positive width, feature_dim, epochs, batch_size and max_lr "
                            f"and shift >= 0; got {self}")


class DigitsNet(nn.Module):
    """(B, 1, 8, 8) -> conv 3x3 (w) -> conv 3x3 (2w) -> max-pool 2 -> conv 3x3 (2w) -> fc (feature_dim) -> fc (10)."""

    def __init__(self, width: int = 16, feature_dim: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.conv3 = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.fc = nn.Linear(2 * width * 4 * 4, feature_dim)
        self.head = nn.Linear(feature_dim, NUM_CLASSES)
        self.register_buffer("feature_scale", torch.ones(()))  # set after training: 1 / RMS of the training features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (B, feature_dim)."""
        h = F.silu(self.conv2(F.silu(self.conv1(x))))  # (B, 2w, 8, 8)
        h = F.silu(self.conv3(F.max_pool2d(h, 2)))  # (B, 2w, 4, 4)
        return F.silu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def data_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """SHA-256 of the training images (float32) and labels (int64), with their shapes."""
    h = hashlib.sha256()
    h.update(repr((tuple(x.shape), tuple(y.shape))).encode())
    h.update(x.detach().cpu().to(torch.float32).contiguous().numpy().tobytes())
    h.update(y.detach().cpu().to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


def _shift_batch(x: torch.Tensor, dy: int, dx: int, s: int) -> torch.Tensor:
    """Translate (B, C, H, W) by (dy, dx) pixels, filling with background (-1)."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (s, s, s, s), value=-1.0)
    return padded[..., s - dy:s - dy + h, s - dx:s - dx + w]


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run the block on one intra-op thread and restore the caller's setting: bit-identical on any thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_digits_classifier(config: DigitsClassifierConfig, x: torch.Tensor, y: torch.Tensor) -> DigitsNet:
    """Adam with a one-cycle schedule on cross-entropy; every random draw comes from `config.seed`; one thread."""
    with _one_thread():
        net = _train(config, x, y)
        with torch.no_grad():
            net.feature_scale.fill_(float(net.features(x).double().pow(2).mean().rsqrt()))
    return net


def _train(config: DigitsClassifierConfig, x: torch.Tensor, y: torch.Tensor) -> DigitsNet:
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's global RNG
        torch.manual_seed(config.seed)
        net = DigitsNet(config.width, config.feature_dim)
    g = torch.Generator().manual_seed(config.seed)
    n = len(x)
    per_epoch = -(-n // config.batch_size)
    opt = torch.optim.Adam(net.parameters(), lr=config.max_lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.max_lr, total_steps=config.epochs * per_epoch)
    net.train()
    for _ in range(config.epochs):
        perm = torch.randperm(n, generator=g)
        for start in range(0, n, config.batch_size):
            idx = perm[start:start + config.batch_size]
            xb = x[idx]
            if config.shift:
                dy, dx = torch.randint(-config.shift, config.shift + 1, (2,), generator=g).tolist()
                xb = _shift_batch(xb, dy, dx, config.shift)
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


@torch.no_grad()
def accuracy(net: DigitsNet, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of images whose argmax logit is the label."""
    return float((net(x).argmax(1) == y).double().mean())


def _cache_paths(cache_dir: Path) -> tuple[Path, Path]:
    folder = Path(cache_dir).expanduser() / CACHE_SUBDIR
    return folder / "classifier.safetensors", folder / "classifier.json"


def _read_cache(cache_dir: Path, config: DigitsClassifierConfig, fingerprint: str) -> tuple[DigitsNet, dict] | None:
    """The cached network and its metadata when they match `config` and the data; None otherwise."""
    weights, meta_path = _cache_paths(cache_dir)
    if not (weights.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT or meta.get("config") != to_dict(config) \
            or meta.get("data_fingerprint") != fingerprint:
        return None
    net = DigitsNet(config.width, config.feature_dim)
    try:
        net.load_state_dict(load_file(str(weights)))
    except Exception:  # damaged or foreign file (safetensors raises its own types; shapes raise RuntimeError)
        return None
    return net.eval(), meta


def load_or_train_digits_classifier(cache_dir: str | Path, config: DigitsClassifierConfig = DigitsClassifierConfig()
                                    ) -> tuple[DigitsNet, dict]:
    """(network, metadata) from the cache when it matches config and data, else trained now and cached.

    metadata: format, config, data_fingerprint, test_accuracy, train_accuracy, train_seconds, torch, and
    "cached" (True when read from the cache, False when trained by this call; not stored).
    """
    from difflab.data.digits import load_digits_split

    x_train, y_train = load_digits_split("train")
    fingerprint = data_fingerprint(x_train, y_train)
    hit = _read_cache(Path(cache_dir), config, fingerprint)
    if hit is not None:
        net, meta = hit
        return net, {**meta, "cached": True}
    t0 = time.perf_counter()
    net = train_digits_classifier(config, x_train, y_train)
    seconds = time.perf_counter() - t0
    x_test, y_test = load_digits_split("test")
    meta = {"format": CACHE_FORMAT, "config": to_dict(config), "data_fingerprint": fingerprint,
            "test_accuracy": accuracy(net, x_test, y_test), "train_accuracy": accuracy(net, x_train, y_train),
            "train_seconds": round(seconds, 3), "torch": torch.__version__}
    weights, meta_path = _cache_paths(Path(cache_dir))
    try:
        blob = save({k: v.detach().contiguous() for k, v in net.state_dict().items()})
        atomic_write(weights, lambda f: f.write(blob))
        atomic_write(meta_path, lambda f: f.write((json.dumps(meta, indent=2) + "\n").encode()))  # last: marks it complete
    except OSError as e:
        raise UserError(f"cannot write the digits classifier cache in {weights.parent} ({e.strerror}); "
                        "pass a writable --cache-dir") from None
    return net, {**meta, "cached": False}


class DigitsFeatures:
    """FeatureExtractor of the digits classifier: (N, 1, 8, 8) in [-1, 1] -> {"pool": (N, 64), "logits": (N, 10)}."""

    name = "digits"
    keys = ("pool", "logits")

    def __init__(self, net: DigitsNet, info: dict | None = None):
        self.net = net.eval()
        self.info = dict(info or {})
        self.dims = {"pool": net.fc.out_features, "logits": NUM_CLASSES}

    @classmethod
    def from_cache(cls, cache_dir: str | Path, config: DigitsClassifierConfig = DigitsClassifierConfig()) -> DigitsFeatures:
        """The cached classifier (trained first when the cache is missing or stale)."""
        return cls(*load_or_train_digits_classifier(cache_dir, config))

    def check_shape(self, shape: tuple[int, ...], name: str = "images") -> None:
        if len(shape) != 4 or tuple(shape[1:]) != IMAGE_SHAPE:
            got = "x".join(map(str, shape[1:])) if len(shape) == 4 else str(tuple(shape))
            raise UserError(f"the digits feature source needs 1x8x8 images (CxHxW, the 8x8 digits); the {name} are {got}: "
                            "use --features inception for other images")

    @torch.no_grad()
    def extract(self, images: torch.Tensor | np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Penultimate features and logits, float32, `batch_size` images at a time."""
        self.check_shape(tuple(images.shape))
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1; got {batch_size}")
        x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
        if not x.dtype.is_floating_point:
            raise UserError(f"images must be float in [-1, 1]; got {x.dtype} (convert uint8 with x / 127.5 - 1)")
        x = x.to(torch.float32)
        if not torch.isfinite(x).all():
            raise UserError("images contain NaN or inf; check the sampler output")
        if x.numel() and float(x.abs().max()) > 2.0:
            raise UserError(f"images must be in [-1, 1]; got values up to {float(x.abs().max()):g}")
        pools, logits = [], []
        with _one_thread():  # these convolutions are too small to gain from threads; extra threads only contend
            for start in range(0, len(x), batch_size):
                h = self.net.features(x[start:start + batch_size].clamp(-1.0, 1.0))
                pools.append((h * self.net.feature_scale).numpy())
                logits.append(self.net.head(h).numpy())
        if not pools:
            return {"pool": np.zeros((0, self.dims["pool"]), np.float32), "logits": np.zeros((0, NUM_CLASSES), np.float32)}
        return {"pool": np.concatenate(pools), "logits": np.concatenate(logits)}

