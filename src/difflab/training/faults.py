"""What a run does when it misbehaves or is interrupted: divergence against the running median, signals caught
between steps, and the partial files a killed run leaves for resume to remove (docs/reliability.md)."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

RECENT_LOSSES, MIN_RECENT = 50, 20


def is_diverging(loss: float, recent: list[float], factor: float) -> bool:
    """A finite loss more than `factor` times the median of the recent good ones (once MIN_RECENT are known): the
    weights have blown up even if nothing is NaN yet (a too-large learning rate's first, finite, huge update)."""
    if factor == 0 or len(recent) < MIN_RECENT or not math.isfinite(loss):
        return False
    ordered = sorted(recent)
    median = ordered[len(ordered) // 2]
    return median > 0 and loss > factor * median


def row_step(line: str) -> int | None:
    """The step of a metrics.jsonl line; None for a torn line (a kill mid-write), which resume drops."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def catch_signals():
    """SIGINT / SIGTERM during training set a flag (read after each step) instead of killing the process mid-write.
    Handlers can only be set from the main thread; elsewhere signals keep their defaults. The old handlers come back."""
    import signal
    import threading

    got: dict[str, int] = {}
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def handler(num, frame):
        if "signal" in got:  # a second signal: the user insists
            raise KeyboardInterrupt
        got["signal"] = num

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def sweep_partial_files(root: Path) -> list[Path]:
    """Temp files of atomic writes (.NAME.*.tmp) and checkpoint halves without their JSON, which only a killed run leaves."""
    removed = []
    for folder in (root, root / "checkpoints", root / "samples", root / "plots"):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            orphan = p.suffix == ".safetensors" and p.name.startswith("step-") and not p.with_suffix(".json").exists()
            if (p.name.startswith(".") and p.name.endswith(".tmp")) or orphan:
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed
