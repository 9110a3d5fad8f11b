"""The fidelity/diversity trade-off of guidance, measured: sample every class at every scale, then score each scale.

Per scale: FID, precision and recall (Kynkaenniemi et al. 2019) of the samples against a reference set in an
independent feature space (the `digits` feature classifier of eval/, not the guiding classifier), and the
accuracy of that independent classifier on the samples (does a sample guided to class y look like a y?).
Dhariwal & Nichol 2021 (Sec. 4.3, Fig. 4-5; seed 004): as the scale grows, precision and accuracy rise while
recall falls; FID is best at an intermediate scale. Every scale starts from the same x_T (and sampler noise), so
differences between rows come from guidance alone.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from difflab.data.atomic import atomic_savefig, atomic_write_text
from difflab.data import DataConfig, load_dataset, parse_data_spec, save_image_grid
from difflab.errors import UserError
from difflab.pipelines.sample import SampleRequest, check_guidance_request, generate, guided_model
from difflab.runs import DIFFUSION_KINDS, load_run
from difflab.training.dist import resolve_device

SWEEP_METRICS = ("fid", "precision", "recall")


@dataclass(frozen=True)
class SweepRequest:
    run: Path
    scales: tuple[float, ...]
    n: int  # samples per class at each scale
    guidance: str = "classifier"  # "classifier" | "cfg"
    classifier: Path | None = None
    base: str = "auto"
    sampler: str | None = None
    steps: int | None = None
    spacing: str | None = None
    sampler_options: dict | None = None  # the sampler's keyword options (e.g. {"eta": 0.5} for ddim)
    seed: int = 0
    batch_size: int = 250
    ref: str = "digits:test"
    features: str = "digits"
    cache_dir: str | None = None
    device: str = "auto"


def parse_scales(spec: str) -> tuple[float, ...]:
    """'0,1,2,4,10' -> (0.0, 1.0, 2.0, 4.0, 10.0); non-negative, distinct."""
    try:
        scales = tuple(float(v) for v in spec.split(",") if v.strip())
    except ValueError:
        raise UserError(f"--scales must be comma-separated numbers like 0,1,2,4,10; got {spec!r}") from None
    if not scales or any(s < 0 for s in scales) or len(set(scales)) != len(scales):
        raise UserError(f"--scales must be distinct numbers >= 0, like 0,1,2,4,10; got {spec!r}")
    return scales


def _independent_scores(extractor, images: torch.Tensor, labels: torch.Tensor | None, real_feats: dict, batch_size: int) -> dict:
    """FID, precision, recall against the reference features, and the independent classifier's accuracy on `labels`."""
    from difflab.eval.metrics import compute_metrics

    feats = extractor.extract(images, batch_size)
    row = dict(compute_metrics(real_feats, feats, SWEEP_METRICS))
    if "logits" in feats and labels is not None:
        pred = torch.from_numpy(np.asarray(feats["logits"])).argmax(1)
        row["accuracy"] = float((pred == labels).double().mean())
    return row


def guidance_sweep(req: SweepRequest, progress: bool = False, grids: Path | None = None) -> dict:
    """Run the sweep; returns a JSON-able report (request, reference floor, one row per scale)."""
    from difflab.pipelines.evaluate import build_extractor

    if req.guidance not in ("classifier", "cfg"):
        raise UserError(f"the sweep needs --guidance classifier or cfg; got {req.guidance!r}")
    if req.n < 1 or req.batch_size < 1:
        raise UserError("--n and --batch-size must be at least 1")
    device = resolve_device(req.device)
    run = load_run(req.run, kind=DIFFUSION_KINDS, device=device)
    cfg = run.cfg
    name = req.sampler or cfg.sample.sampler
    check_guidance_request(SampleRequest(run=run, guidance=req.guidance, scale=max(req.scales), classifier=req.classifier,
                                         base=req.base), name)
    clf = load_run(req.classifier, kind="classifier", device=device) if req.guidance == "classifier" else None
    num_classes = guided_model(run, req.guidance, req.scales[0], clf, req.base).num_classes  # model/classifier errors before anything slow
    # Every scale is one request: n per class, class-major, from the same seed (so the same x_T and sampler noise).
    labels = torch.arange(num_classes).repeat_interleave(req.n)
    one = SampleRequest(run=run, n=len(labels), sampler=name, steps=req.steps, spacing=req.spacing, sampler_options=req.sampler_options,
                        batch_size=req.batch_size, seed=req.seed, classes=labels.tolist(), device=str(device),
                        guidance=req.guidance, classifier=clf, base=req.base)

    extractor = build_extractor(req.features, cache_dir=req.cache_dir)
    ref = load_dataset(parse_data_spec(req.ref, DataConfig(split="all")))
    if hasattr(extractor, "check_shape"):
        extractor.check_shape(tuple(ref.x.shape), "reference images")
    real_feats = extractor.extract(ref.x, req.batch_size)
    train = load_dataset(DataConfig(name=cfg.data.name, split=cfg.data.split, labels="auto"))
    floor = _independent_scores(extractor, train.x, train.y, real_feats, req.batch_size)  # real training images: the best to hope for
    floor["n"] = len(train)

    rows, res = [], None
    for scale in req.scales:
        res = generate(dataclasses.replace(one, scale=scale), progress=progress)
        if not torch.isfinite(res.images).all():
            raise UserError(f"samples at scale {scale:g} contain NaN or inf: the guided sampler diverged; use smaller scales")
        row = {"scale": scale, **_independent_scores(extractor, res.images, labels, real_feats, req.batch_size),
               "n": len(labels), "nfe": res.nfe, "seconds": round(res.seconds, 2)}
        rows.append(row)
        if grids is not None:
            per = min(req.n, 10)
            pick = torch.cat([torch.arange(k * req.n, k * req.n + per) for k in range(num_classes)])
            save_image_grid(res.images[pick], grids / f"scale-{scale:g}.png")
    info = dict(getattr(extractor, "info", {}))
    info.pop("cached", None)
    return {
        "date": datetime.date.today().isoformat(),
        "request": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(req).items()},
        "run_step": run.step, "sampler": name, "steps": res.steps, "spacing": req.spacing or cfg.sample.spacing, "options": res.options,
        "base": res.base,
        "classifier_step": clf.step if clf is not None else None,
        "features": req.features, "feature_info": info, "ref": req.ref, "n_ref": len(ref),
        "train_images": floor, "rows": rows,
    }


def markdown_table(report: dict) -> str:
    """The per-scale table as markdown, with the real-training-images row as the floor."""
    name = {"classifier": "s", "cfg": "w"}[report["request"]["guidance"]]
    has_acc = any("accuracy" in r for r in report["rows"])
    head = f"| {name} | FID | precision | recall |" + (" accuracy |" if has_acc else "")
    lines = [head, "|---:|---:|---:|---:|" + ("---:|" if has_acc else "")]
    for r in report["rows"]:
        acc = f" {r['accuracy']:.3f} |" if has_acc else ""
        lines.append(f"| {r['scale']:g} | {r['fid']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} |{acc}")
    f = report["train_images"]
    acc = f" {f['accuracy']:.3f} |" if has_acc and "accuracy" in f else (" |" if has_acc else "")
    lines.append(f"| real train images ({f['n']}) | {f['fid']:.2f} | {f['precision']:.3f} | {f['recall']:.3f} |{acc}")
    return "\n".join(lines) + "\n"


def plot_sweep(report: dict, out: Path) -> Path:
    """Three panels against the scale: FID; precision and recall; accuracy (dashed: real training images)."""
    from matplotlib.figure import Figure

    rows, floor = report["rows"], report["train_images"]
    s = [r["scale"] for r in rows]
    label = {"classifier": "classifier scale s", "cfg": "cfg weight w"}[report["request"]["guidance"]]
    panels = [("FID (lower is better)", ["fid"]), ("precision / recall", ["precision", "recall"])]
    if all("accuracy" in r for r in rows):
        panels.append(("accuracy of the independent classifier", ["accuracy"]))
    fig = Figure(figsize=(4.2 * len(panels), 3.2))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            line = ax.plot(s, [r[key] for r in rows], marker="o", label=key)[0]
            if key in floor:
                ax.axhline(floor[key], color=line.get_color(), ls="--", lw=0.8)
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel(label)
        ax.set_title(title, fontsize=10)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(f"guidance sweep ({report['request']['guidance']}, {report['sampler']} {report['steps']} steps); dashed: real train images",
                 fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_savefig(fig, out, dpi=100)
    return out


def write_sweep(report: dict, out: Path) -> dict[str, Path]:
    """sweep.json, sweep.md and sweep.png in the folder `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "sweep.json", "markdown": out / "sweep.md", "plot": out / "sweep.png"}
    atomic_write_text(paths["json"], json.dumps(report, indent=2) + "\n")
    atomic_write_text(paths["markdown"], markdown_table(report))
    plot_sweep(report, paths["plot"])
    return paths
