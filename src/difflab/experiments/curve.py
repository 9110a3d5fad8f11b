"""Quality against training time: every kept checkpoint of every run scored like the final model (`compare --curve`).

Answers "when does which model get good?": with equal budgets the ordering of the final models depends on the
budget, and this curve shows where the lines cross.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from difflab.data.atomic import atomic_savefig
from difflab.experiments.runs import GeneratorRun, training_curve


def _time_at(rows: list[dict], step: int) -> float | None:
    """Training seconds up to `step` (the last logged row at or before it)."""
    before = [r for r in rows if r["step"] <= step]
    return before[-1]["time_s"] if before else None


def score_checkpoints(label: str, run: GeneratorRun, scorer, *, n: int, seed: int, batch_size: int, sampler: str | None,
                      steps: int | None, cpu_seconds: float | None = None, progress: bool = False, log=print) -> list[dict]:
    """One point per checkpoint of `run`: step, training seconds (wall, from the logged it/s), FID, precision, recall, KID.

    `cpu_seconds`: the run's total training CPU time (a CPU-time budget); each point then also gets `cpu_s`, that total
    pro rata to its step (a step costs the same compute throughout training, unlike wall time on a shared machine).
    """
    rows = training_curve(run.metrics_path)
    last = rows[-1]["step"] if rows else 0
    points = []
    for ckpt in run.checkpoints():
        step = int(json.loads(ckpt.with_suffix(".json").read_text())["step"])
        log(f"{label}: checkpoint step {step}")
        s = run.sample(n, seed=seed, batch_size=batch_size, sampler=sampler, steps=steps if run.diffusion else None,
                       progress=progress, checkpoint=ckpt)
        point = {"model": label, "kind": run.kind, "step": step, "time_s": _time_at(rows, step)}
        if cpu_seconds is not None and last:
            point["cpu_s"] = cpu_seconds * step / last
        points.append({**point, **scorer.score(s.images)})
    return points


def curve_markdown(points: list[dict]) -> str:
    cpu = all("cpu_s" in p for p in points)
    lines = ["# Quality against training time", "", "Every kept checkpoint, sampled and scored like the final models.", "",
             f"| Model | step | {'training CPU time (s) | ' if cpu else ''}training wall time (s) | FID | Precision | Recall |",
             "|---|---|---|---|---|---|" + ("---|" if cpu else "")]
    for p in points:
        t = "–" if p["time_s"] is None else f"{p['time_s']:.0f}"
        c = f"{p['cpu_s']:.0f} | " if cpu else ""
        lines.append(f"| {p['model']} | {p['step']} | {c}{t} | {p['fid']:.2f} | {p['precision']:.4f} | {p['recall']:.4f} |")
    return "\n".join(lines) + "\n"


def plot_curve(points: list[dict], out: Path, floor: dict | None = None) -> Path:
    """FID (log) and recall against training time, one line per model."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    models = list(dict.fromkeys(p["model"] for p in points))
    x_key = "cpu_s" if all("cpu_s" in p for p in points) else "time_s"
    for ax, key, title in ((axes[0], "fid", "FID (lower is better)"), (axes[1], "recall", "recall (higher is better)")):
        for m in models:
            pts = [(p[x_key], p[key]) for p in points if p["model"] == m and p[x_key] is not None and math.isfinite(p[key])]
            ax.plot([a for a, _ in pts], [b for _, b in pts], marker="o", ms=3, label=m)
        if floor is not None and key in floor:
            ax.axhline(floor[key], color="gray", ls="--", lw=1, label="real data (floor)")
        if key == "fid" and all(p["fid"] > 0 for p in points):
            ax.set_yscale("log")
        ax.set_xlabel("training CPU time (s)" if x_key == "cpu_s" else "training wall time (s)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_savefig(fig, out, dpi=100)
    return out
