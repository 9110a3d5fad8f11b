"""The DDPM objective ablation (Ho et al. 2020, Table 2): six (parameterisation, variance, objective) cells, trained and scored.

  mu prediction:  L with learned diagonal Sigma | L with fixed isotropic Sigma | ||mu_tilde - mu_theta||^2
  eps prediction: L with learned diagonal Sigma | L with fixed isotropic Sigma | L_simple

In difflab's config terms a cell sets denoiser.parameterization (mu | eps), denoiser.var_type (learned | fixed_small,
with model.learn_sigma to match) and loss.type (vlb | simple); everything else is the base preset (the `digits`
U-Net, made unconditional). Each cell is trained for the same number of steps, then scored on FID and
precision/recall (samples from the full-T ancestral sampler, Algorithm 2, by default), and on the NLL bound in
bits/dim of held-out images (`losses.bits_per_dim`, on a subsample). A cell whose loss turns NaN/Inf (the Trainer
raises TrainingDiverged after train.max_nonfinite such steps), whose loss blows up, or whose samples or bound are not
finite is reported as unstable, as the paper's blank entries are, never dropped.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from difflab.configs import apply_overrides, from_dict, to_dict
from difflab.data.atomic import atomic_savefig, atomic_write_text
from difflab.errors import UserError


@dataclass(frozen=True)
class AblationCell:
    name: str
    parameterization: str  # "mu" | "eps"
    var_type: str  # "learned" | "fixed_small"
    loss: str  # "vlb" | "simple"
    objective: str  # the row label of Ho et al. Table 2
    paper_is: str | None  # CIFAR-10 Inception Score of Table 2; None = the paper's blank (unstable) entry
    paper_fid: float | None


CELLS: tuple[AblationCell, ...] = (
    AblationCell("mu-L-learned", "mu", "learned", "vlb", "mu~ prediction: L, learned diagonal Sigma", "7.28 ± 0.10", 23.69),
    AblationCell("mu-L-fixed", "mu", "fixed_small", "vlb", "mu~ prediction: L, fixed isotropic Sigma", "8.06 ± 0.09", 13.22),
    AblationCell("mu-mse", "mu", "fixed_small", "simple", "mu~ prediction: ||mu~ - mu_theta||^2", None, None),
    AblationCell("eps-L-learned", "eps", "learned", "vlb", "eps prediction: L, learned diagonal Sigma", None, None),
    AblationCell("eps-L-fixed", "eps", "fixed_small", "vlb", "eps prediction: L, fixed isotropic Sigma", "7.67 ± 0.13", 13.51),
    AblationCell("eps-simple", "eps", "fixed_small", "simple", "eps prediction: ||eps~ - eps_theta||^2 (L_simple)", "9.46 ± 0.11", 3.17),
)
CELL_NAMES = tuple(c.name for c in CELLS)
REPORT_FILES = ("ablation.md", "ablation.json", "ablation_losses.png", "ablation_samples.png")
DIVERGENCE_FACTOR = 10.0  # final loss above this multiple of the best (smoothed) loss: the training diverged
MIN_ROWS_FOR_TREND = 20  # logged steps needed before a rising loss is called a divergence


@dataclass(frozen=True)
class AblationRequest:
    out: Path
    data: str = "digits"
    train_steps: int = 2000  # training steps of every cell
    base: str = "digits"  # run preset (or JSON / run folder) the cells start from
    overrides: tuple[str, ...] = ()  # key=value for every cell
    cell_overrides: dict = field(default_factory=dict)  # {cell name: (key=value, ...)} for one cell
    cells: tuple[str, ...] = CELL_NAMES
    n: int = 500  # samples for FID / precision / recall
    sampler: str = "ddpm"
    steps: int | None = None  # sampling steps; None: all T steps (the learned variance is for single steps t -> t-1)
    nll_n: int = 100  # held-out images in the bits/dim estimate
    features: str = "digits"
    ref: str | None = None  # default: the test split of `data`
    batch_size: int = 250
    seed: int = 0
    cache_dir: str | None = None
    force: bool = False
    reuse: bool = False  # keep cells already trained in out/cells (same config), train the others


def cell_config(req: AblationRequest, cell: AblationCell):
    """The RunConfig of a cell: the base preset, unconditional, `steps`, the cell's three choices, then the overrides."""
    from difflab.data import parse_data_spec
    from difflab.runs.diffusion.config import RunConfig
    from difflab.runs import resolve_config

    base = resolve_config(req.base)
    d = to_dict(base)
    d["data"] = to_dict(parse_data_spec(req.data, base.data))
    d["model"].update(num_classes=None, class_dropout_null=False, learn_sigma=cell.var_type == "learned")
    d["denoiser"].update(parameterization=cell.parameterization, var_type=cell.var_type)
    d["loss"]["type"] = cell.loss
    d["train"].update(steps=req.train_steps, label_dropout=0.0)
    return apply_overrides(from_dict(RunConfig, d), [*req.overrides, *req.cell_overrides.get(cell.name, ())])


def check_request(req: AblationRequest) -> list[AblationCell]:
    unknown = [c for c in req.cells if c not in CELL_NAMES]
    unknown += [c for c in req.cell_overrides if c not in CELL_NAMES]
    if unknown:
        raise UserError(f"unknown ablation cell {unknown[0]!r}; valid: {', '.join(CELL_NAMES)}")
    if req.train_steps < 1:
        raise UserError(f"--train-steps must be at least 1; got {req.train_steps}")
    if req.steps is not None and req.steps < 1:
        raise UserError(f"--steps must be at least 1; got {req.steps}")
    if req.n < 2 or req.nll_n < 1 or req.batch_size < 1:
        raise UserError(f"--n must be at least 2, --nll-n and --batch-size at least 1; got {req.n}, {req.nll_n}, {req.batch_size}")
    if req.force and req.reuse:
        raise UserError("--force and --reuse contradict each other: --force retrains every cell, --reuse keeps finished ones")
    out = Path(req.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the report")
    if not (req.force or req.reuse) and (any((out / f).exists() for f in REPORT_FILES) or (out / "cells").exists()):
        raise UserError(f"{out} already holds an ablation: add --reuse to keep its trained cells, --force to retrain them, or choose another --out")
    cells = [c for c in CELLS if c.name in req.cells]
    for c in cells:  # every config error before any training
        cell_config(req, c)
    return cells


def _loss_summary(metrics: Path) -> dict:
    """Final and best loss (medians of windows of 20% of the logged steps), skipped (NaN) steps, and whether the loss blew up.

    The blow-up test needs at least MIN_ROWS_FOR_TREND logged steps: the bound T * L_t of one batch is heavy-tailed,
    so a handful of steps says nothing about a trend.
    """
    rows = [json.loads(ln) for ln in metrics.read_text().splitlines() if ln.strip()] if metrics.is_file() else []
    losses = [r["loss"] for r in rows if "loss" in r]
    finite = [v for v in losses if math.isfinite(v)]
    k = max(1, len(losses) // 5)
    windows = [_median(losses[i:i + k]) for i in range(0, len(losses) - k + 1)] if losses else []
    final = windows[-1] if windows else math.nan
    best = min((w for w in windows if math.isfinite(w)), default=math.nan)
    blew_up = bool(windows) and (not math.isfinite(final) or
                                 (len(losses) >= MIN_ROWS_FOR_TREND and best > 0 and final > DIVERGENCE_FACTOR * best))
    return {"final_loss": final, "best_loss": best, "skipped_steps": int(sum(r.get("skipped", 0) for r in rows)),
            "logged_nonfinite": len(losses) - len(finite), "loss_blew_up": blew_up, "steps_done": rows[-1]["step"] if rows else 0}


def _median(v: list[float]) -> float:
    s = sorted(v, key=lambda a: (not math.isfinite(a), a))  # NaN/Inf last: a window with a majority of them is non-finite
    return s[len(s) // 2]


def _finished(run_dir: Path, cfg) -> bool:
    """A cell's run folder holds this very config trained to the end (or a recorded divergence of it)."""
    from difflab.training.checkpoint import list_checkpoints

    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file() or json.loads(cfg_path.read_text()) != to_dict(cfg):
        return False
    if (run_dir / "diverged.json").is_file():
        return True
    found = list_checkpoints(run_dir / "checkpoints")
    return bool(found) and json.loads(found[-1].with_suffix(".json").read_text())["step"] >= cfg.train.steps


def train_cell(req: AblationRequest, cell: AblationCell, run_dir: Path, progress: bool) -> dict:
    """Train one cell (or reuse it); returns {"diverged": message or None, "train_seconds": ...}."""
    from difflab.runs import train_run
    from difflab.training.trainer import TrainingDiverged

    cfg = cell_config(req, cell)
    if req.reuse and _finished(run_dir, cfg):
        div = run_dir / "diverged.json"
        facts = json.loads(div.read_text()) if div.is_file() else {"diverged": None, "diverged_at_step": None, "nonfinite_in_a_row": None,
                                                                    "train_seconds": None}
        return {**facts, "reused": True}
    t0 = time.perf_counter()
    diverged, at_step, nonfinite = None, None, None
    try:
        # force: an old cell is parked in run_dir/.replaced and dropped only once the new one has a checkpoint
        train_run(cfg, run_dir, force=True, progress=progress)
    except TrainingDiverged as e:
        diverged, at_step, nonfinite = str(e), e.step, e.nonfinite
    facts = {"diverged": diverged, "diverged_at_step": at_step, "nonfinite_in_a_row": nonfinite,
             "train_seconds": round(time.perf_counter() - t0, 1)}
    if diverged is not None:
        atomic_write_text(run_dir / "diverged.json", json.dumps(facts, indent=2) + "\n")
    else:
        (run_dir / "diverged.json").unlink(missing_ok=True)  # an old cell's verdict
    return {**facts, "reused": False}


def score_cell(req: AblationRequest, run_dir: Path, scorer, x_nll: torch.Tensor, progress: bool) -> tuple[dict, torch.Tensor]:
    """(FID / precision / recall / KID of the samples and the NLL bound in bits/dim on x_nll, the samples)."""
    from difflab.losses import bits_per_dim
    from difflab.pipelines.sample import SampleRequest, generate
    from difflab.runs import load_run

    out: dict = {}
    res = generate(SampleRequest(run=run_dir, sampler=req.sampler, steps=req.steps or cell_T(run_dir), n=req.n,
                                 batch_size=req.batch_size, seed=req.seed), progress=progress)
    out["sample_seconds"] = round(res.seconds, 1)
    out["samples_finite"] = bool(torch.isfinite(res.images).all())
    if out["samples_finite"]:
        out.update(scorer.score(res.images))
    run = load_run(run_dir)
    t0 = time.perf_counter()
    bpd = bits_per_dim(run.denoiser, x_nll, generator=torch.Generator().manual_seed(req.seed), batch_size=req.batch_size, progress=progress)
    out["nll_bpd"], out["nll_bpd_se"] = bpd["total_bpd"], bpd["total_bpd_se"]
    out["nll_seconds"] = round(time.perf_counter() - t0, 1)
    return out, res.images


def cell_T(run_dir: Path) -> int:
    return int(json.loads((run_dir / "config.json").read_text())["process"]["T"])


def run_ablation(req: AblationRequest, progress: bool = False, log=print) -> dict:
    """Train and score every requested cell; write ablation.md / ablation.json / ablation_losses.png into req.out."""
    from difflab.data import load_dataset, parse_data_spec
    from difflab.experiments.scoring import Scorer

    cells = check_request(req)
    out = Path(req.out)
    first = cell_config(req, cells[0])
    ref = req.ref or f"{first.data.name}:test"
    m = first.model
    # The scorer validates features, reference and --n: a bad request fails here. --force deletes nothing: each cell is
    # replaced when its new run has a checkpoint, the report files when the new ones are written.
    scorer = Scorer(req.features, ref, (m.in_channels, m.image_size, m.image_size), cache_dir=req.cache_dir, n=req.n, seed=req.seed,
                    progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    nll_data = f"{first.data.name}:test"  # held-out images, shaped like the training data
    x_nll = load_dataset(parse_data_spec(nll_data, first.data)).x[:req.nll_n]
    rows, samples = [], []
    for cell in cells:
        run_dir = out / "cells" / cell.name
        log(f"cell {cell.name}: training {req.train_steps} steps ({cell.objective})")
        facts = train_cell(req, cell, run_dir, progress)
        row = {"cell": cell.name, "objective": cell.objective, "parameterization": cell.parameterization, "var_type": cell.var_type,
               "loss": cell.loss, "paper_is": cell.paper_is, "paper_fid": cell.paper_fid, **facts, **_loss_summary(run_dir / "metrics.jsonl")}
        if facts["diverged"] is None:
            log(f"cell {cell.name}: sampling {req.n} images and the NLL bound on {len(x_nll)} images")
            scores, images = score_cell(req, run_dir, scorer, x_nll, progress)
            row.update(scores)
            samples.append((cell.name, images))
        reasons = []
        if facts["diverged"] is not None:
            reasons.append(f"loss NaN/Inf for {facts['nonfinite_in_a_row']} steps in a row at step {facts['diverged_at_step']}")
        if row["loss_blew_up"]:
            reasons.append(f"final loss > {DIVERGENCE_FACTOR:g}x its best")
        if row.get("samples_finite") is False:
            reasons.append("samples NaN/Inf")
        if "nll_bpd" in row and not math.isfinite(row["nll_bpd"]):
            reasons.append("NLL bound not finite")
        row["stable"] = not reasons
        row["unstable_reason"] = "; ".join(reasons) or None
        rows.append(row)
        log(f"cell {cell.name}: " + ("stable" if row["stable"] else f"UNSTABLE ({row['unstable_reason']})")
            + (f", FID {row['fid']:.2f}" if "fid" in row else "") + (f", NLL {row['nll_bpd']:.3f} bits/dim" if "nll_bpd" in row else ""))
    report = {"data": req.data, "train_steps": req.train_steps, "base": req.base, "overrides": list(req.overrides),
              "cell_overrides": {k: list(v) for k, v in req.cell_overrides.items()}, "n": req.n, "sampler": req.sampler,
              "sample_steps": req.steps or first.process.T, "nll_n": len(x_nll), "nll_data": nll_data, "features": scorer.source, "ref": ref,
              "n_ref": scorer.n_ref, "T": first.process.T, "rows": rows}
    write_ablation(report, out)
    if samples:
        from difflab.experiments.plots import plot_sample_grids

        plot_sample_grids(samples, out / "ablation_samples.png")
    return report


def ablation_markdown(report: dict) -> str:
    def f(v, d=2):
        return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else (f"{v:.{d}f}" if isinstance(v, float) else str(v))

    lines = ["# DDPM objective ablation (Ho et al. 2020, Table 2)", "",
             f"Data {report['data']}, {report['train_steps']} training steps per cell (base preset `{report['base']}`, unconditional, T = {report['T']}). "
             f"FID / precision / recall: {report['n']} samples ({report['sampler']}, {report['sample_steps']} steps) vs {report['ref']} "
             f"({report['n_ref']} images), {report['features']} features. NLL: the bound in bits/dim on {report['nll_n']} images of {report['nll_data']}. "
             "Unstable cells have no scores, as in the paper.", "",
             "| Objective | paper IS (CIFAR-10) | paper FID (CIFAR-10) | stable | FID | precision | recall | NLL (bits/dim) | final train loss | NaN/Inf steps |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        stable = "yes" if r["stable"] else f"**no** ({r['unstable_reason']})"
        nll = f"{f(r.get('nll_bpd'), 3)} ± {f(r.get('nll_bpd_se'), 3)}" if r.get("nll_bpd") is not None and r["stable"] else "–"
        fid = f(r.get("fid")) if r["stable"] else "–"
        nan_steps = r.get("skipped_steps", 0) + (r.get("nonfinite_in_a_row") or 0)
        lines.append(f"| {r['objective'].replace('|', chr(92) + '|')} | {r['paper_is'] or '–'} | {f(r['paper_fid'])} | {stable} | {fid} | "
                     f"{f(r.get('precision'), 3) if r['stable'] else '–'} | {f(r.get('recall'), 3) if r['stable'] else '–'} | {nll} | "
                     f"{f(r.get('final_loss'), 4)} | {nan_steps} |")
    lines += ["", "Paper: unconditional CIFAR-10, 800k steps; its blank entries \"were unstable to train and generated poor samples with "
                  "out-of-range scores\" (Ho et al. 2020, Table 2)."]
    return "\n".join(lines) + "\n"


def write_ablation(report: dict, out: Path) -> None:
    from difflab.data.atomic import atomic_write
    from difflab.experiments.runs import training_curve

    atomic_write(out / "ablation.json", lambda fh: fh.write((json.dumps(report, indent=2, default=str) + "\n").encode()))
    atomic_write(out / "ablation.md", lambda fh: fh.write(ablation_markdown(report).encode()))
    from matplotlib.figure import Figure

    rows = report["rows"]
    fig = Figure(figsize=(3.6 * len(rows), 3.0))
    axes = fig.subplots(1, len(rows), squeeze=False)[0]
    for ax, r in zip(axes, rows):
        curve = training_curve(out / "cells" / r["cell"] / "metrics.jsonl")
        pts = [(c["step"], c["loss"]) for c in curve if "loss" in c and math.isfinite(c["loss"])]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1)
            if all(p[1] > 0 for p in pts):
                ax.set_yscale("log")
        ax.set_title(f"{r['cell']}{'' if r['stable'] else ' (unstable)'}", fontsize=9)
        ax.set_xlabel("step")
    fig.tight_layout()
    atomic_savefig(fig, out / "ablation_losses.png", dpi=90)
