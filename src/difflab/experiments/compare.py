"""The comparison of seed 000: diffusion vs DCGAN vs VAE on Precision, Recall, FID (+ KID), loss curves, samples, trilemma.

`compare(CompareRequest)` samples every run, embeds the samples and a reference set with one feature network,
and writes into `out`:

  table.md, compare.json   the seed-000 table (+ KID, sampling speed, training time) and the seed's FFHQ numbers
  trilemma.md              images/s against FID / precision / recall, diffusion at several step counts
  losses.png               training-loss curves (DCGAN's two losses, the VAE's terms, the diffusion loss)
  samples.png              side-by-side sample grids (and real data)
  trilemma.png             the trilemma as a plot
  curve.md, curve.png      (with curve=True) FID / recall of every kept checkpoint against training time

With `train_with_budget` (experiments/budget.py) the three runs are first trained with an equal wall-clock budget.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from difflab.errors import UserError
from difflab.eval.metrics import MetricsConfig
from difflab.experiments.plots import plot_loss_curves, plot_sample_grids, plot_trilemma
from difflab.experiments.runs import GeneratorRun, Samples, open_run, training_curve
from difflab.experiments.scoring import Scorer
from difflab.experiments.trilemma import trilemma_markdown, trilemma_steps

REPORT_FILES = ("table.md", "compare.json", "trilemma.md", "losses.png", "samples.png", "trilemma.png")
# Seed 000's table (VAE, DCGAN, DDIM-sampled diffusion on FFHQ faces; Inception features).
SEED_TABLE = {"VAE": {"precision": 0.0042, "recall": 0.0011, "fid": 327.2013},
              "DCGAN": {"precision": 0.0924, "recall": 0.0192, "fid": 149.5057},
              "Diffusion": {"precision": 0.0540, "recall": 0.2042, "fid": 69.9397}}


@dataclass(frozen=True)
class CompareRequest:
    runs: tuple[str, ...]
    out: Path
    features: str = "digits"
    ref: str = "digits:test"
    n: int = 1000  # samples per model (and per trilemma point)
    sampler: str | None = None  # diffusion sampler of the table and the trilemma; None: each run's sample.sampler
    steps: int | None = None  # diffusion steps of the table; None: each run's sample.steps
    trilemma_steps: tuple[int, ...] = (5, 10, 25, 50, 100)
    floor: str | None = "auto"  # real images scored like a model (the real-vs-real floor); "auto": the ref's train split
    batch_size: int = 256  # images per sampling batch (the same for every model: images/s depends on it)
    seed: int = 0
    cache_dir: str | None = None
    metrics_config: MetricsConfig = MetricsConfig()
    force: bool = False
    budget: dict = field(default_factory=dict)  # facts of a budget training, copied into the report
    curve: bool = False  # also score every kept checkpoint: quality against training time (curve.md, curve.png)


def check_request(req: CompareRequest) -> list[GeneratorRun]:
    """Validate everything cheap before sampling anything; returns the opened runs."""
    if not req.runs:
        raise UserError("give at least one run to compare (--runs DIR ...), or --data with --budget to train them")
    if req.n < 2 or req.batch_size < 1:
        raise UserError(f"--n must be at least 2 and --batch-size at least 1; got {req.n}, {req.batch_size}")
    if any(s < 1 for s in req.trilemma_steps):
        raise UserError(f"--trilemma-steps must be positive integers; got {list(req.trilemma_steps)}")
    if req.steps is not None and req.steps < 1:
        raise UserError(f"--steps must be at least 1; got {req.steps}")
    runs = [open_run(r) for r in req.runs]
    shapes = {r.image_shape for r in runs}
    if len(shapes) > 1:
        raise UserError(f"the runs make images of different shapes ({', '.join('x'.join(map(str, s)) for s in sorted(shapes))}); compare runs trained on the same data")
    out = Path(req.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the report")
    if not req.force and any((out / f).exists() for f in REPORT_FILES):
        raise UserError(f"{out} already holds a comparison report; add --force to overwrite it or choose another --out")
    return runs


def _labels(runs: list[GeneratorRun]) -> list[str]:
    """'Diffusion', 'VAE', 'DCGAN'; the run folder's name is added when a kind appears twice."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.label] = counts.get(r.label, 0) + 1
    return [r.label if counts[r.label] == 1 else f"{r.label} ({r.path.name})" for r in runs]


def _training_facts(run: GeneratorRun) -> dict:
    rows = training_curve(run.metrics_path)
    return {"train_steps": rows[-1]["step"] if rows else None, "train_seconds": round(rows[-1]["time_s"], 1) if rows else None,
            "budget_stop": bool(rows and rows[-1].get("budget_stop"))}


def _floor_spec(req: CompareRequest) -> str | None:
    if req.floor is None or req.floor == "none":
        return None
    if req.floor != "auto":
        return req.floor
    name, sep, split = req.ref.rpartition(":")
    return f"{name}:train" if sep and split == "test" else None


def _floor_images(spec: str, n: int, seed: int) -> torch.Tensor:
    from difflab.eval.inputs import load_images

    x = load_images(spec, role="floor").x
    if len(x) > n:
        x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]]
    return x


def _point(label: str, run: GeneratorRun, s: Samples, metrics: dict) -> dict:
    return {"model": label, "kind": run.kind, "run": str(run.path), "sampler": s.sampler, "steps": s.steps, "nfe": s.nfe,
            "images_per_s": s.images_per_second, "sample_seconds": s.seconds, "n": len(s.images), **metrics}


def compare(req: CompareRequest, progress: bool = False, log=print) -> dict:
    """Sample, score and plot every run; write the report files into req.out; return the report as a dict."""
    runs = check_request(req)
    labels = _labels(runs)
    scorer = Scorer(req.features, req.ref, runs[0].image_shape, cache_dir=req.cache_dir, n=req.n, seed=req.seed,
                    batch_size=req.batch_size, metrics_config=req.metrics_config, progress=progress)
    rows, trilemma, grids = [], [], []
    for label, run in zip(labels, runs):
        main_steps = req.steps or run.default_steps()
        log(f"{label}: sampling {req.n} images" + (f" ({req.sampler or run.config['sample']['sampler']}, {main_steps} steps)" if run.diffusion else ""))
        s = run.sample(req.n, seed=req.seed, batch_size=req.batch_size, sampler=req.sampler, steps=main_steps if run.diffusion else None,
                       progress=progress)
        point = _point(label, run, s, scorer.score(s.images))
        rows.append({**point, **_training_facts(run), "conditional": run.conditional})
        grids.append((label, s.images))
        trilemma.append(point)
        if run.diffusion:
            for steps in trilemma_steps(run, req.trilemma_steps, exclude=main_steps):
                log(f"{label}: trilemma point, {steps} steps")
                st = run.sample(req.n, seed=req.seed, batch_size=req.batch_size, sampler=req.sampler, steps=steps, progress=progress)
                trilemma.append(_point(label, run, st, scorer.score(st.images)))
    floor = None
    spec = _floor_spec(req)
    if spec is not None:
        real = _floor_images(spec, req.n, req.seed)
        floor = {"data": spec, "n": len(real), **scorer.score(real)}
        grids.append((f"real ({spec})", real))
    curve = []
    if req.curve:
        from difflab.experiments.curve import score_checkpoints

        for label, run in zip(labels, runs):
            cpu = 60 * req.budget["budget_minutes"] if req.budget.get("clock") == "cpu" else None
            curve += score_checkpoints(label, run, scorer, n=req.n, seed=req.seed, batch_size=req.batch_size, sampler=req.sampler,
                                       steps=req.steps, cpu_seconds=cpu, progress=progress, log=log)
    report = {"features": scorer.source, "feature_info": {k: v for k, v in getattr(scorer.extractor, "info", {}).items() if k != "cached"},
              "ref": req.ref, "n_ref": scorer.n_ref, "n": req.n, "batch_size": req.batch_size, "seed": req.seed,
              "threads": torch.get_num_threads(), "table": rows, "trilemma": sorted(trilemma, key=lambda p: (p["model"], p["nfe"])),
              "floor": floor, "seed_000": SEED_TABLE, "ordering": seed_ordering(rows), "budget": req.budget, "curve": curve,
              "metrics_config": dataclasses.asdict(req.metrics_config)}
    write_report(report, runs, labels, grids, Path(req.out))
    return report


def seed_ordering(rows: list[dict]) -> dict:
    """Does seed 000's ordering hold? FID diffusion < DCGAN < VAE, and diffusion has the highest recall."""
    by = {r["kind"]: r for r in rows}
    out: dict = {}
    if {"diffusion", "dcgan", "vae"} <= by.keys():
        d, g, v = by["diffusion"], by["dcgan"], by["vae"]
        out["fid_diffusion_lt_dcgan_lt_vae"] = bool(d["fid"] < g["fid"] < v["fid"])
        out["fid_order"] = " < ".join(r["model"] for r in sorted((d, g, v), key=lambda r: r["fid"]))
        out["recall_highest_diffusion"] = bool(d["recall"] > max(g["recall"], v["recall"]))
        out["recall_order"] = " > ".join(r["model"] for r in sorted((d, g, v), key=lambda r: -r["recall"]))
    return out


# ----- writing -----------------------------------------------------------------------------------------

def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def table_markdown(report: dict) -> str:
    lines = [f"# Comparison: {', '.join(r['model'] for r in report['table'])}", "",
             f"{report['n']} samples per model vs {report['ref']} ({report['n_ref']} images), {report['features']} features; "
             f"sampling batch {report['batch_size']}, {report['threads']} torch thread(s).", "",
             "| Model | Precision | Recall | FID | KID (x1e3) | sampler | NFE | images/s | train steps | train wall time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["table"]:
        cond = " (class-conditional)" if r.get("conditional") else ""
        lines.append(f"| {r['model']}{cond} | {_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['fid'], 2)} | "
                     f"{_fmt(1e3 * r['kid'], 2)} ± {_fmt(1e3 * r['kid_std'], 2)} | {r['sampler']} | {r['nfe']} | {_fmt(r['images_per_s'], 1)} | "
                     f"{_fmt(r['train_steps'])} | {_fmt(r['train_seconds'], 0)} |")
    f = report.get("floor")
    if f:
        lines.append(f"| real data ({f['data']}, {f['n']}) | {_fmt(f['precision'])} | {_fmt(f['recall'])} | {_fmt(f['fid'], 2)} | "
                     f"{_fmt(1e3 * f['kid'], 2)} ± {_fmt(1e3 * f['kid_std'], 2)} | – | – | – | – | – |")
    o = report.get("ordering") or {}
    if o:
        lines += ["", f"Seed 000's ordering: FID diffusion < DCGAN < VAE: **{'yes' if o['fid_diffusion_lt_dcgan_lt_vae'] else 'no'}** "
                      f"(measured {o['fid_order']}); recall highest for diffusion: **{'yes' if o['recall_highest_diffusion'] else 'no'}** "
                      f"(measured {o['recall_order']})."]
    if report.get("budget"):
        clock = "CPU-time" if report["budget"].get("clock") == "cpu" else "wall-clock"
        lines += ["", f"Equal {clock} training budget of {report['budget'].get('budget_minutes')} min per model on "
                      f"{report['budget'].get('data')} (constant learning rate after warm-up, stopped by the budget): " + "; ".join(
            f"{k}: {v['steps']} steps" for k, v in report["budget"].get("runs", {}).items()) + "."]
    lines += ["", "Seed 000 (FFHQ faces, Inception features), for reference:", "", "| Model | Precision | Recall | FID |", "|---|---|---|---|"]
    for name, v in SEED_TABLE.items():
        lines.append(f"| {name} | {v['precision']:.4f} | {v['recall']:.4f} | {v['fid']:.4f} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict, runs: list[GeneratorRun], labels: list[str], grids: list, out: Path) -> None:
    from difflab.data.atomic import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "compare.json", lambda f: f.write((json.dumps(report, indent=2) + "\n").encode()))
    atomic_write(out / "table.md", lambda f: f.write(table_markdown(report).encode()))
    atomic_write(out / "trilemma.md", lambda f: f.write(trilemma_markdown(report).encode()))
    plot_loss_curves([(label, r.kind, training_curve(r.metrics_path)) for label, r in zip(labels, runs)], out / "losses.png")
    plot_sample_grids(grids, out / "samples.png")
    plot_trilemma(report["trilemma"], out / "trilemma.png", report.get("floor"))
    if report.get("curve"):
        from difflab.experiments.curve import curve_markdown, plot_curve

        atomic_write(out / "curve.md", lambda f: f.write(curve_markdown(report["curve"]).encode()))
        plot_curve(report["curve"], out / "curve.png", report.get("floor"))
