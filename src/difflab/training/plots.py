"""Training curves from metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

from difflab.data.atomic import atomic_savefig


def read_metrics(path: Path) -> list[dict]:
    """The rows of metrics.jsonl; a torn last line (a kill mid-write) is skipped."""
    rows = []
    for ln in path.read_text().splitlines():
        try:
            rows.append(json.loads(ln))
        except json.JSONDecodeError:
            continue
    return [r for r in rows if isinstance(r, dict)]


def plot_metrics(metrics: Path, out: Path, keys: tuple[str, ...] = ("loss", "grad_norm", "lr")) -> Path:
    """One panel per logged key against the step (log-scale loss), written as PNG."""
    # Figure without pyplot: no global backend state, no display needed.
    from matplotlib.figure import Figure

    rows = read_metrics(metrics)
    keys = tuple(k for k in keys if any(k in r for r in rows))
    fig = Figure(figsize=(4 * len(keys), 3))
    axes = fig.subplots(1, len(keys), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]  # null: a NaN/Inf step
        ax.plot([p[0] for p in pts], [p[1] for p in pts])
        ax.set_xlabel("step")
        ax.set_title(key)
        if key == "loss" and all(p[1] > 0 for p in pts):
            ax.set_yscale("log")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_savefig(fig, out, dpi=100)
    return out
