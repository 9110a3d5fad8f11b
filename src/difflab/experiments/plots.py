"""Figures of the comparison report: training-loss curves, side-by-side sample grids, the trilemma."""

from __future__ import annotations

import math
from pathlib import Path

from torch import Tensor

from difflab.data.atomic import atomic_savefig
from difflab.data.images import make_grid
from difflab.data.npz import to_uint8_nhwc
from difflab.runs import DIFFUSION_KINDS

# Which logged columns tell each kind's training story (seed 000 shows DCGAN's two losses and the diffusion loss).
CURVE_KEYS = {"diffusion": ("loss",), "vae": ("rec", "kl", "loss"), "dcgan": ("loss_d", "loss_g")}
CURVE_LABELS = {"loss": "loss", "rec": "reconstruction -log p(x|z) / D", "kl": "KL(q(z|x) || p(z)) / D",
                "loss_d": "discriminator", "loss_g": "generator (non-saturating)"}


def _figure(ncols: int, nrows: int = 1, size: tuple[float, float] = (4.2, 3.2)):
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows))
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _smooth(v: list[float], k: int) -> list[float]:
    if k <= 1 or len(v) < 3:
        return v
    out, acc = [], []
    for x in v:
        acc.append(x)
        if len(acc) > k:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def plot_loss_curves(curves: list[tuple[str, str, list[dict]]], out: Path) -> Path:
    """One panel per run: (title, kind, rows with time_s) -> PNG; x is training time in seconds."""
    fig, axes = _figure(max(1, len(curves)))
    for ax, (title, kind, rows) in zip(axes[0], curves):
        for key in CURVE_KEYS.get(kind, ("loss",)):
            pts = [(r["time_s"], r[key]) for r in rows if key in r and r[key] is not None and math.isfinite(r[key])]
            if not pts:
                continue
            label = CURVE_LABELS[key] if not (kind == "vae" and key == "loss") else "loss = rec + beta KL"
            ax.plot([p[0] for p in pts], _smooth([p[1] for p in pts], 5), label=label, lw=1.2)
        if kind in DIFFUSION_KINDS:
            vals = [r["loss"] for r in rows if "loss" in r and r["loss"] and r["loss"] > 0]
            if vals:
                ax.set_yscale("log")
        steps = rows[-1]["step"] if rows else 0
        ax.set_title(f"{title} ({steps} steps)", fontsize=10)
        ax.set_xlabel("training wall time (s)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_savefig(fig, out, dpi=100)
    return out


def plot_sample_grids(panels: list[tuple[str, Tensor]], out: Path, per_panel: int = 64) -> Path:
    """Side by side: one grid of up to `per_panel` images (in [-1, 1]) per (title, images)."""
    fig, axes = _figure(len(panels), size=(3.4, 3.6))
    for ax, (title, images) in zip(axes[0], panels):
        x = images[:per_panel]
        nrow = math.ceil(math.sqrt(len(x)))
        grid = make_grid(to_uint8_nhwc(x), nrow, 1, 255)
        ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_savefig(fig, out, dpi=110)
    return out


def plot_trilemma(points: list[dict], out: Path, floor: dict | None = None) -> Path:
    """Two panels against sampling speed (images/s, log): FID (quality, lower is better) and recall (diversity)."""
    fig, axes = _figure(2, size=(5.0, 3.8))
    markers = {"diffusion": "o", "vae": "s", "dcgan": "^"}
    for ax, key, title in ((axes[0][0], "fid", "quality: FID (lower is better)"), (axes[0][1], "recall", "diversity: recall (higher is better)")):
        groups: dict[str, list[dict]] = {}
        for p in points:
            groups.setdefault(p["model"], []).append(p)
        for model, pts in groups.items():
            pts = sorted(pts, key=lambda p: p["images_per_s"])
            ax.plot([p["images_per_s"] for p in pts], [p[key] for p in pts], marker=markers.get(pts[0]["kind"], "o"),
                    label=model, lw=1 if len(pts) > 1 else 0)
            for p in pts:
                if p["kind"] in DIFFUSION_KINDS:
                    ax.annotate(str(p["nfe"]), (p["images_per_s"], p[key]), textcoords="offset points", xytext=(3, 3), fontsize=7)
        if floor is not None and key in floor:
            ax.axhline(floor[key], color="gray", ls="--", lw=1, label="real data (floor)")
        ax.set_xscale("log")
        ax.set_xlabel("sampling speed (images/s, this machine)")
        ax.set_title(title, fontsize=10)
        if key == "fid" and all(p["fid"] > 0 for p in points):
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.suptitle("generative learning trilemma (numbers at the diffusion points: network evaluations per image)", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_savefig(fig, out, dpi=100)
    return out

