"""TensorBoard event files of a run (RUN/tensorboard/): the metrics.jsonl rows, the EMA decay, sample grids and eval
metrics, written with torch's SummaryWriter when the optional `tensorboard` package is installed (docs/tensorboard.md)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from difflab.data.images import MIN_CELL_PIXELS, make_grid
from difflab.data.npz import to_uint8_nhwc

FOLDER = "tensorboard"  # RUN/tensorboard/: one TensorBoard run per run folder, so `tensorboard --logdir runs/` lists them all
MISSING = "note: the `tensorboard` package is not installed (pip install difflab[tensorboard]); logging to metrics.jsonl only"


def summary_writer_class():
    """torch's SummaryWriter, or None when the `tensorboard` package it writes with is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch.utils.tensorboard raises it (ModuleNotFoundError or its own) without the package
        return None
    return SummaryWriter


def grid_image(x: Tensor) -> np.ndarray:
    """Images (N, C, H, W) in [-1, 1] -> the uint8 (H, W, C) grid of samples/step-N.png (same upscale, columns, padding)."""
    images = to_uint8_nhwc(x if x.ndim == 4 else x.unsqueeze(0))
    n, h, w, _ = images.shape
    # The layout of data.images.save_image_grid's defaults, so the TensorBoard image is the PNG pixel for pixel.
    upscale = max(1, math.ceil(MIN_CELL_PIXELS / max(1, min(h, w))))
    if upscale > 1:
        images = images.repeat(upscale, axis=1).repeat(upscale, axis=2)
    return make_grid(images, max(1, min(math.ceil(math.sqrt(n)), n)), 2, 255)


def wait_past_newest(log_dir: Path) -> None:
    """Sleep (under a second) until the clock is past the second in the newest event file's name, if it is not yet.

    TensorBoard reads a folder's files in name order, events.out.tfevents.<seconds>.<host>.<pid>.<n>, and a session's
    purge hides only what it read before it: a session started in the same second as the last one could sort first.
    """
    stamps = [int(p.name.split(".")[3]) for p in log_dir.glob("events.out.tfevents.*") if p.name.split(".")[3].isdigit()]
    while stamps and time.time() < max(stamps) + 1:
        time.sleep(0.05)


def scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The numeric columns of a metrics.jsonl row but its step (flags such as budget_stop are not curves)."""
    return {k: float(v) for k, v in row.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class RunBoard:
    """One training session's event file in RUN/tensorboard/; opened by the Trainer on rank 0 only, closed when fit ends.

    `step` is the step training starts from: the writer's purge_step is step + 1, so TensorBoard hides what an earlier
    session logged after that step (a killed run's points past its last checkpoint; all of a run replaced by --force),
    just as resume truncates metrics.jsonl. Without the package it says so once on stderr and writes nothing.
    """

    def __init__(self, run_dir: Path, step: int):
        cls = summary_writer_class()
        self.writer = None
        if cls is None:
            print(MISSING, file=sys.stderr)
            return
        log_dir = Path(run_dir) / FOLDER
        wait_past_newest(log_dir)
        self.writer = cls(str(log_dir), purge_step=step + 1)

    def log_row(self, row: Mapping[str, Any], ema_decay: float | None = None) -> None:
        """A metrics.jsonl row as train/<column> scalars at its step, and the EMA decay of its last update."""
        if self.writer is None:
            return
        step = int(row["step"])
        for key, value in scalars(row).items():
            self.writer.add_scalar(f"train/{key}", value, step)
        if ema_decay is not None:
            self.writer.add_scalar("train/ema_decay", ema_decay, step)

    def log_grid(self, step: int, images: Tensor) -> None:
        """A sample grid (images in [-1, 1]) as the image 'samples' at `step`."""
        if self.writer is not None:
            self.writer.add_image("samples", grid_image(images), step, dataformats="HWC")

    def close(self) -> None:
        """Flush and close the event file (idempotent)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def log_eval(run_dir: Path, step: int, metrics: Mapping[str, float], prefix: str = "eval") -> bool:
    """Append <prefix>/<metric> scalars at `step` to RUN/tensorboard/ (a new event file); False when the package is missing."""
    cls = summary_writer_class()
    if cls is None:
        return False
    writer = cls(str(Path(run_dir) / FOLDER))  # no purge_step: evaluating a checkpoint must not hide its training curves
    try:
        for key, value in metrics.items():
            writer.add_scalar(f"{prefix}/{key}", float(value), int(step))
    finally:
        writer.close()
    return True
