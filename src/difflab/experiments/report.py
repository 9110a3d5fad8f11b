"""`difflab report RUN [RUN ...] --out DIR`: one self-contained static page (DIR/index.html) about one or more runs.

What the page shows, per run (several runs side by side, curves on the same axes, tables joined):

  overview          kind, trained steps, last loss, training time, what was found
  training curves   loss (each kind's terms), gradient norm and learning rate from metrics.jsonl
  samples           samples/step-N.png over training and the other grids in samples/
  denoising chain   x_t and the predicted x0-hat every few DDIM steps for 4 samples (diffusion runs), sampled here
  results           every eval / guidance sweep / compare (trilemma) / ablation / accuracy-vs-t / ELBO JSON in the
                    run folder and its subfolders, as tables and plots (FID vs NFE, the guidance trade-off, the trilemma)
  configuration     the resolved config.json (for several runs: the keys that differ first)
  result files      every JSON read

Nothing is fetched and nothing runs in the browser: the images are base64 `data:` URIs in the one HTML file, which is
written atomically (a crash never leaves half a page over a good one). docs/report.md describes each section.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from difflab.errors import UserError
from difflab.experiments import report_html as H
from difflab.experiments.runs import training_curve

RUN_HAS = ("config.json (the resolved config, with its \"kind\"), checkpoints/step-N.safetensors, metrics.jsonl, samples/step-N.png "
           "and plots/, as `difflab train` writes them")
CHAIN_SAMPLER_STEPS = 50  # DDIM steps of the chain (capped at T)
CHAIN_SAMPLES = 4
MAX_GRIDS = 24  # sample grids per run shown (evenly spread over training when there are more)
MAX_JSON_BYTES = 20 << 20
MAX_DEPTH = 4  # folders below the run folder searched for result JSON


@dataclass(frozen=True)
class ReportRequest:
    runs: tuple[Path, ...]
    out: Path  # a folder; the page is out/index.html
    force: bool = False  # write into an existing, non-empty folder (only index.html is replaced)
    chain: bool = True
    chain_steps: int = 8  # columns of the denoising chain
    device: str = "auto"


@dataclass
class RunData:
    path: Path
    name: str
    kind: str
    config: dict
    rows: list[dict]  # metrics.jsonl with time_s
    step: int | None  # newest complete checkpoint
    checkpoints: int
    grids: list[tuple[str, Path]]  # (caption, PNG) from samples/
    results: list[tuple[str, str, object]] = field(default_factory=list)  # (type, path relative to the run, data)
    skipped: list[str] = field(default_factory=list)  # JSON files that could not be read
    images: dict[str, list[tuple[str, Path]]] = field(default_factory=dict)  # result path -> grids beside it (sweep scales)
    chain: tuple[bytes, list[int], int] | None = None  # (PNG, timesteps of the columns, sampler steps)
    chain_note: str | None = None


# ----- checks ---------------------------------------------------------------------------------------------

def check_request(req: ReportRequest) -> None:
    """Every cheap check before anything is loaded or sampled: the runs are run folders, --out may be written."""
    from difflab.runs import run_kind

    if not req.runs:
        raise UserError("give at least one run folder: difflab report RUN [RUN ...] --out DIR")
    for r in req.runs:
        p = Path(r).expanduser()
        if not p.exists():
            raise UserError(f"run {r} does not exist; a run folder has {RUN_HAS}")
        if not p.is_dir():
            raise UserError(f"{r} is a file, not a run folder; a run folder has {RUN_HAS}")
        if run_kind(p) is None:
            raise UserError(f"{r} is not a run folder (no config.json or checkpoints/); a run folder has {RUN_HAS}")
    if req.chain and not 2 <= req.chain_steps <= CHAIN_SAMPLER_STEPS:
        raise UserError(f"--chain-steps must be between 2 and {CHAIN_SAMPLER_STEPS}; got {req.chain_steps}")
    out = Path(req.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the report (its page is index.html)")
    if out.is_dir() and any(out.iterdir()) and not req.force:
        raise UserError(f"--out {out} exists and is not empty; choose another folder or add --force to replace its index.html")


# ----- reading a run folder -------------------------------------------------------------------------------

def _names(paths: list[Path]) -> list[str]:
    """Each run's folder name; the parent is added where two runs share a name."""
    names = [p.name or str(p) for p in paths]
    return [f"{p.parent.name}/{n}" if names.count(n) > 1 else n for p, n in zip(paths, names)]


def _is_eval(d) -> bool:
    return isinstance(d, dict) and "n_samples" in d and "ref" in d


def classify(data) -> str | None:
    """Which result a JSON object is, by its content: eval | sweep | compare | ablation | accuracy | elbo | None."""
    if not isinstance(data, dict) or not data:
        return None
    if _is_eval(data) or all(_is_eval(v) for v in data.values()):
        return "eval"
    rows = data.get("rows")
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        if isinstance(data.get("train_images"), dict) and all("scale" in r for r in rows):
            return "sweep"
        if all("cell" in r for r in rows):
            return "ablation"
        if all("t" in r and "accuracy" in r for r in rows):
            return "accuracy"
    if isinstance(data.get("table"), list) and isinstance(data.get("trilemma"), list):
        return "compare"
    if "elbo_per_dim" in data:
        return "elbo"
    return None


def _result_files(root: Path) -> tuple[list[tuple[str, str, object]], list[str], dict]:
    found, skipped, images = [], [], {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        depth = len(here.relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if d != "checkpoints" and not d.startswith(".") and depth < MAX_DEPTH)
        for f in sorted(files):
            if not f.endswith(".json") or f == "config.json" or f.startswith("."):
                continue
            p = here / f
            rel = str(p.relative_to(root))
            try:
                if p.stat().st_size > MAX_JSON_BYTES:
                    skipped.append(f"{rel} (over {MAX_JSON_BYTES >> 20} MB)")
                    continue
                data = json.loads(p.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                skipped.append(f"{rel} (not readable JSON: {type(e).__name__})")
                continue
            kind = classify(data)
            if kind is not None:
                found.append((kind, rel, data))
                if kind == "sweep":
                    grids = [*here.glob("scale-*.png"), *(here / "grids").glob("scale-*.png")]  # `difflab sweep` writes grids/
                    scales = sorted(grids, key=lambda q: _number(q.stem.removeprefix("scale-")))
                    images[rel] = [(f"scale {q.stem.removeprefix('scale-')}", q) for q in scales]
    return found, skipped, images


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.inf


def _sample_grids(samples: Path) -> list[tuple[str, Path]]:
    steps = sorted(((int(p.stem[5:]), p) for p in samples.glob("step-*.png") if p.stem[5:].isdigit()), key=lambda s: s[0])
    if len(steps) > MAX_GRIDS:  # evenly spread over training, the last one always kept
        keep = sorted({round(i * (len(steps) - 1) / (MAX_GRIDS - 1)) for i in range(MAX_GRIDS)})
        steps = [steps[i] for i in keep]
    other = sorted(p for p in samples.glob("*.png") if not (p.stem.startswith("step-") and p.stem[5:].isdigit()))
    return [(f"step {n}", p) for n, p in steps] + [(p.stem, p) for p in other]


def read_run(path: Path, name: str) -> RunData:
    from difflab.runs import run_kind
    from difflab.training.checkpoint import list_checkpoints

    try:
        config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{path / 'config.json'} is not valid JSON; the run folder is damaged") from None
    ckpts = list_checkpoints(path / "checkpoints")
    step = None
    if ckpts:
        try:
            step = int(json.loads(ckpts[-1].with_suffix(".json").read_text())["step"])
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            step = None
    run = RunData(path, name, run_kind(path) or "diffusion", config, training_curve(path / "metrics.jsonl"), step, len(ckpts),
                  _sample_grids(path / "samples"))
    run.results, run.skipped, run.images = _result_files(path)
    return run


# ----- the denoising chain --------------------------------------------------------------------------------

def denoising_chain(path: Path, columns: int, device: str = "auto", n: int = CHAIN_SAMPLES, seed: int = 0):
    """(images for save_image_grid, timesteps of the columns, sampler steps): per sample a row of x_t and a row of
    x0-hat at `columns` of the DDIM steps, from the first (pure noise) to the last. x_t is divided by its prior scale
    a_t sqrt(1 + sigma_t^2) (1 for VP) so that a VE run's noisy images are visible too."""
    import torch

    from difflab.runs import DIFFUSION_KINDS, load_run
    from difflab.samplers import ddim, plan_steps, prior_sample
    from difflab.samplers.sigma import a_of, sigma_of
    from difflab.training.dist import resolve_device

    dev = resolve_device(device)
    run = load_run(path, kind=DIFFUSION_KINDS, device=dev)
    den = run.denoiser
    proc = den.process
    steps = plan_steps(proc, min(CHAIN_SAMPLER_STEPS, proc.T), "leading")
    g = torch.Generator().manual_seed(seed)
    x_T = prior_sample(proc, (n, *run.image_shape), g, dtype=torch.float32).to(dev)
    y = (torch.arange(n) % run.num_classes).to(dev) if run.num_classes else None  # never y=None for a conditional model
    records: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    current = {"x": x_T}

    def record(d: dict) -> None:  # d["x"] is the state after the step; the pair shown is (x_t, x0-hat(x_t))
        records.append((int(d["t"]), current["x"].float().cpu(), d["x0"].float().cpu()))
        current["x"] = d["x"]

    ddim(den, x_T, steps, y=y, generator=g, callback=record)
    k = min(columns, len(records))
    picks = sorted({round(i * (len(records) - 1) / max(1, k - 1)) for i in range(k)})
    cells = []
    for j in range(n):
        cells += [records[i][1][j] / (a_of(proc, records[i][0]) * math.sqrt(1 + sigma_of(proc, records[i][0]) ** 2)) for i in picks]
        cells += [records[i][2][j] for i in picks]
    return torch.stack(cells).clamp(-1, 1), [records[i][0] for i in picks], len(steps)


def _chain(run: RunData, req: ReportRequest, tmp: Path, log) -> None:
    from difflab.runs import DIFFUSION_KINDS

    if not req.chain:
        run.chain_note = "skipped (--no-chain)"
    elif run.kind not in DIFFUSION_KINDS:
        run.chain_note = f"a {run.kind} run has no denoising chain (only diffusion runs sample step by step)"
    elif run.config.get("condition", {}).get("kind", "none") != "none":
        run.chain_note = "an image-conditional (restoration) model needs an input image for its chain: see `difflab restore`"
    elif run.step is None:
        run.chain_note = "no checkpoint yet: train the run first"
    else:
        from difflab.data import save_image_grid

        log(f"{run.name}: denoising chain ({CHAIN_SAMPLES} samples, DDIM, {req.chain_steps} columns)")
        images, ts, steps = denoising_chain(run.path, req.chain_steps, req.device)
        png = save_image_grid(images, tmp / f"chain-{len(os.listdir(tmp))}.png", nrow=len(ts))
        run.chain = (png.read_bytes(), ts, steps)


# ----- sections -------------------------------------------------------------------------------------------

EVAL_METRICS = (("fid", "FID"), ("sfid", "sFID"), ("precision", "precision"), ("recall", "recall"), ("density", "density"),
                ("coverage", "coverage"), ("kid", "KID"), ("is", "IS"), ("class_accuracy", "class accuracy"))


def _config(runs: list[RunData]) -> H.Html:
    from difflab.configs import flatten_dict

    flat = [flatten_dict(r.config) for r in runs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    missing = H.Html("<em>(absent)</em>")

    def section_of(key: str) -> str:
        return key.split(".", 1)[0] if "." in key else "run"

    diff = {k for k in keys if len({json.dumps(f.get(k, "\0absent"), sort_keys=True) for f in flat}) > 1}
    groups = list(dict.fromkeys(section_of(k) for k in keys))
    tables = []
    for g in groups:
        ks = [k for k in keys if section_of(k) == g]
        head = ["key", *([r.name for r in runs] if len(runs) > 1 else ["value"])]
        rows = [[k.split(".", 1)[1] if "." in k else k, *[f.get(k, missing) for f in flat]] for k in ks]
        tables.append(H.table(head, rows, caption=g, row_classes=["diff" if k in diff else "" for k in ks]))
    grid = H.Html('<div class="cfg">' + "".join(tables) + "</div>")
    if len(runs) == 1:
        return grid
    shared = [k for k in keys if k in diff and all(k in f for f in flat)]
    parts = []
    if shared:
        rows = [[k, *[f[k] for f in flat]] for k in shared]
        parts.append(H.table(["key", *[r.name for r in runs]], rows, caption=f"{len(shared)} keys differ"))
    for r, f in zip(runs, flat):
        only = [k for k in keys if k in f and not all(k in g for g in flat)]
        if only:
            parts.append(H.para(f"{r.name}: {len(only)} keys not in every run: " + ", ".join(f"{k}={H.fmt(f[k])}" for k in only)))
    top = H.join(parts) if parts else H.note("the runs have the same configuration")
    return H.join([top, H.Html(f"<details><summary>full configurations (differences highlighted)</summary>{grid}</details>")])


def _overview(runs: list[RunData]) -> H.Html:
    rows = []
    for r in runs:
        last = r.rows[-1] if r.rows else {}
        rows.append([r.name, r.kind, H.code(r.path), r.step, r.config.get("train", {}).get("steps"), last.get("loss"),
                     round(last["time_s"], 1) if last else None, r.checkpoints, len(r.grids),
                     ", ".join(f"{rel} ({kind})" for kind, rel, _ in r.results) or "–"])
    return H.table(["run", "kind", "folder", "trained to step", "train.steps", "last loss", "training time (s)", "checkpoints",
                    "sample grids", "results found"], rows)


def _eval_entries(runs: list[RunData]) -> list[tuple[str, dict]]:
    """(column title, eval result) of every eval JSON of every run; {"model": ..., "floor": ...} gives two columns."""
    out = []
    for r in runs:
        for kind, rel, data in r.results:
            if kind != "eval":
                continue
            prefix = f"{r.name} · {rel}" if len(runs) > 1 else rel
            out += [(prefix, data)] if _is_eval(data) else [(f"{prefix} · {k}", v) for k, v in data.items()]
    return out


def _eval_table(entries: list[tuple[str, dict]]) -> H.Html:
    rows = []
    for key, label in EVAL_METRICS:
        if any(key in e for _, e in entries):
            rows.append([label, *[H.plus_minus(e[key], e[key + "_std"]) if key + "_std" in e and key in e else e.get(key) for _, e in entries]])
    rows.append(["samples", *[f"{e.get('samples')} ({e.get('n_samples')})" for _, e in entries]])
    rows.append(["reference", *[f"{e.get('ref')} ({e.get('n_ref')})" for _, e in entries]])
    rows.append(["features", *[e.get("features") for _, e in entries]])
    rows.append(["sampling", *[(f"{e['sampling'].get('sampler')}, {e['sampling'].get('steps')} steps, NFE {e['sampling'].get('nfe')}, "
                                f"seed {e['sampling'].get('seed')}") if isinstance(e.get("sampling"), dict) else "– (images given)"
                               for _, e in entries]])
    return H.table(["metric", *[t for t, _ in entries]], rows, cls="eval")


def _nfe_points(runs: list[RunData]) -> tuple[list, list]:
    points, floors = [], []
    for r in runs:
        pre = f"{r.name}: " if len(runs) > 1 else ""
        for kind, rel, data in r.results:
            if kind == "eval":
                for k, e in ([(None, data)] if _is_eval(data) else data.items()):
                    s = e.get("sampling")
                    if isinstance(s, dict) and isinstance(s.get("nfe"), (int, float)) and isinstance(e.get("fid"), (int, float)):
                        points.append((f"{pre}{s.get('sampler')} (eval)", s["nfe"], e["fid"]))
                    elif isinstance(e.get("fid"), (int, float)) and "sampling" not in e and k == "floor":
                        floors.append((f"{pre}{e.get('samples')}", e["fid"]))
            elif kind == "compare":
                points += [(f"{pre}{p['model']} (compare)", p["nfe"], p["fid"]) for p in data["trilemma"]
                           if isinstance(p, dict) and isinstance(p.get("nfe"), (int, float)) and isinstance(p.get("fid"), (int, float))]
                fl = data.get("floor")
                if isinstance(fl, dict) and isinstance(fl.get("fid"), (int, float)):
                    floors.append((f"{pre}{fl.get('data')}", fl["fid"]))
    return points, floors


def _sweep_block(r: RunData, rel: str, d: dict, tmp: Path) -> H.Html:
    from difflab.experiments.guidance_sweep import plot_sweep

    guidance = d.get("request", {}).get("guidance")
    acc = any("accuracy" in row for row in d["rows"])
    rows = [[H.num(row["scale"], "g"), row["fid"], row["precision"], row["recall"], *([row.get("accuracy")] if acc else []),
             row.get("nfe"), row.get("n")] for row in d["rows"]]
    f = d["train_images"]
    rows.append(["real train images", f.get("fid"), f.get("precision"), f.get("recall"), *([f.get("accuracy")] if acc else []), "–", f.get("n")])
    table = H.table([{"classifier": "s", "cfg": "w"}.get(guidance, "scale"), "FID", "precision", "recall", *(["accuracy"] if acc else []),
                     "NFE", "n"], rows, row_classes=[""] * (len(rows) - 1) + ["floor"])
    plot = H.figure(H.via_file(plot_sweep, d, tmp=tmp), "the guidance trade-off: FID, precision / recall and accuracy against the scale "
                                                        "(dashed: real training images)")
    grids = [H.figure(p.read_bytes(), cap, pixel=True, min_width=160) for cap, p in r.images.get(rel, [])]
    return H.sub(f"{r.name}: guidance sweep ({guidance}, {d.get('sampler')} {d.get('steps')} steps)",
                 H.join([table, plot, H.gallery(grids) if grids else ""]), f"{r.path.name}/{rel}")


def _compare_block(r: RunData, rel: str, d: dict, tmp: Path) -> H.Html:
    from difflab.experiments.plots import plot_trilemma

    rows = [[p["model"], p["precision"], p["recall"], p["fid"], p.get("kid"), p.get("sampler"), p.get("nfe"),
             H.num(p.get("images_per_s"), ".1f"), p.get("train_steps"), H.num(p.get("train_seconds"), ".1f")] for p in d["table"]]
    fl = d.get("floor") or None
    if fl:
        rows.append([f"real data ({fl.get('data')})", fl.get("precision"), fl.get("recall"), fl.get("fid"), fl.get("kid"), *["–"] * 5])
    table = H.table(["model", "precision", "recall", "FID", "KID", "sampler", "NFE", "images/s", "train steps", "train time (s)"], rows,
                    row_classes=[""] * len(d["table"]) + (["floor"] if fl else []))
    tri = H.table(["model", "sampler", "steps", "NFE", "images/s", "FID", "precision", "recall"],
                  [[p["model"], p.get("sampler"), p.get("steps"), p["nfe"], H.num(p["images_per_s"], ".1f"), p["fid"], p.get("precision"),
                    p["recall"]] for p in d["trilemma"]], caption="trilemma points")
    o = d.get("ordering") or {}
    order = H.para(f"FID order: {o['fid_order']}; recall order: {o['recall_order']}") if "fid_order" in o else ""
    plot = H.figure(H.via_file(lambda pts, path: plot_trilemma(pts, path, fl), d["trilemma"], tmp=tmp),
                    "the trilemma: sampling speed against quality (FID) and diversity (recall); numbers: NFE")
    return H.sub(f"{r.name}: comparison", H.join([table, order, tri, plot]), f"{r.path.name}/{rel}")


def _ablation_block(r: RunData, rel: str, d: dict, tmp: Path) -> H.Html:
    rows = [[row.get("objective", row["cell"]), "yes" if row.get("stable") else f"no ({row.get('unstable_reason')})", row.get("fid"),
             row.get("precision"), row.get("recall"), row.get("nll_bpd"), row.get("final_loss"), row.get("paper_fid")] for row in d["rows"]]
    table = H.table(["objective", "stable", "FID", "precision", "recall", "NLL (bits/dim)", "final train loss", "paper FID (CIFAR-10)"], rows)
    bars = H.plot_ablation(d)
    return H.sub(f"{r.name}: DDPM objective ablation ({d.get('train_steps')} training steps per cell)",
                 H.join([table, H.figure(bars, "FID and NLL bound of the stable cells") if bars else ""]), f"{r.path.name}/{rel}")


def _guarded(block, r: RunData, rel: str, d: dict, tmp: Path) -> H.Html:
    """A result file of an unexpected shape (another version, edited by hand) is named, not fatal to the page."""
    try:
        return block(r, rel, d, tmp)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return H.note(f"{r.name}/{rel}: could not be shown ({type(e).__name__}: {e})")


def _results(runs: list[RunData], tmp: Path) -> list[tuple[str, str, H.Html]]:
    """(anchor, title, body) of each kind of result found in the runs."""
    found = {k: [(r, rel, d) for r in runs for kind, rel, d in r.results if kind == k]
             for k in ("eval", "sweep", "compare", "ablation", "accuracy", "elbo")}
    out = []
    entries = _eval_entries(runs)
    if entries:
        points, floors = _nfe_points(runs)
        nfe = H.plot_fid_vs_nfe(points, floors)
        body = [_eval_table(entries), H.figure(nfe, "FID vs NFE (network evaluations per image); dashed: the real-data floor") if nfe else
                H.note("FID vs NFE needs FIDs at two or more NFEs: e.g. `difflab eval --samples RUN --ref digits:test --features digits "
                       "--steps 10 --out RUN/eval-10.json` beside the 50-step one, or a `difflab compare` report in the run folder")]
        out.append(("eval", "Evaluation", H.join(body)))
    for key, title, block in (("sweep", "Guidance sweep", _sweep_block), ("compare", "Comparison and trilemma", _compare_block),
                              ("ablation", "Ablation", _ablation_block)):
        if found[key]:
            out.append((key, title, H.join(_guarded(block, r, rel, d, tmp) for r, rel, d in found[key])))
    if found["accuracy"]:
        curves = [(f"{r.name} ({d.get('split')})" if len(runs) > 1 else str(d.get("split")), d) for r, rel, d in found["accuracy"]]
        tables = [(r.name, H.sub(f"mean accuracy {H.fmt(d.get('mean_accuracy'))}",
                                 H.table(["t", "accuracy", "NLL"], [[row["t"], row["accuracy"], row.get("nll")] for row in d["rows"]]), rel))
                  for r, rel, d in found["accuracy"]]
        out.append(("accuracy", "Classifier accuracy vs t",
                    H.join([H.figure(H.plot_accuracy(curves), "held-out accuracy of argmax p(y | x_t); dashed: chance"), H.columns(tables)])))
    if found["elbo"]:
        cols = [(f"{r.name} · {rel}" if len(runs) > 1 else rel, d) for r, rel, d in found["elbo"]]
        keys = list(dict.fromkeys(k for _, d in cols for k in d))
        out.append(("elbo", "VAE ELBO", H.table(["", *[c for c, _ in cols]], [[k, *[d.get(k) for _, d in cols]] for k in keys])))
    return out


def sections(runs: list[RunData], tmp: Path) -> tuple[list[H.Html], list[tuple[str, str]]]:
    """The page's sections (HTML) and their table of contents."""
    multi = len(runs) > 1
    out = [("overview", "Overview", "what each run folder holds", _overview(runs))]
    curves = H.plot_curves(runs)
    out.append(("curves", "Training curves", "from metrics.jsonl: one row per logged step" + (", the runs on the same axes" if multi else ""),
                H.figure(curves, "loss, gradient norm and learning rate against the training step") if curves else H.note("no metrics.jsonl rows")))
    blocks = []
    for r in runs:
        figs = [H.figure(p.read_bytes(), cap, pixel=True, min_width=160) for cap, p in r.grids]
        empty = H.note("no sample grids in samples/ yet: training writes one every train.sample_every steps")
        blocks.append((r.name, H.gallery(figs) if figs else empty))
    out.append(("samples", "Samples over training",
                "samples/step-N.png, drawn from the EMA weights during training, then the other grids in samples/", H.columns(blocks)))
    blocks = []
    for r in runs:
        if r.chain is None:
            blocks.append((r.name, H.note(f"no denoising chain: {r.chain_note}")))
            continue
        png, ts, steps = r.chain
        k = r.config.get("model", {}).get("num_classes")
        labels = [lab for i in range(CHAIN_SAMPLES) for lab in (f"#{i + 1}{f' (class {i % k})' if k else ''} x_t", f"#{i + 1} x0-hat")]
        cap = f"x_t and the predicted x0-hat of {CHAIN_SAMPLES} samples at {len(ts)} of {steps} DDIM steps (eta 0, seed 0)"
        blocks.append((r.name, H.chain(png, [f"t={t}" for t in ts], labels, cap)))
    out.append(("chain", "Denoising chain", "sampled now from the newest checkpoint's EMA weights: from pure noise (left) to the sample (right)",
                H.columns(blocks)))
    for anchor, title, body in _results(runs, tmp):
        out.append((anchor, title, "from the JSON results found in the run folder" + ("s" if multi else "") + " and their subfolders", body))
    if not any(r.results for r in runs):
        out.append(("results", "Results", None, H.note("no eval.json, sweep, compare or ablation results in the run folder: e.g. "
                                                       "`difflab eval --samples RUN --ref digits:test --features digits --out RUN/eval.json`")))
    out.append(("config", "Configuration", "the resolved config.json of each run" + ("; yellow rows differ between the runs" if multi else ""),
                _config(runs)))
    files = []
    for r in runs:
        items = [f"{rel}  ({kind})" for kind, rel, _ in r.results] + [f"{s}  (skipped)" for s in r.skipped]
        files.append((r.name, H.Html('<ul class="files">' + "".join(f"<li>{H.esc(i)}</li>" for i in items) + "</ul>") if items
                      else H.note("no result JSON found")))
    out.append(("files", "Result files", "every JSON read for this page (relative to the run folder); config.json and checkpoints/ excluded",
                H.columns(files)))
    return [H.section(a, t, intro, body) for a, t, intro, body in out], [(a, t) for a, t, _, _ in out]


# ----- the page -------------------------------------------------------------------------------------------

def build_report(req: ReportRequest, log=print) -> Path:
    """Check, read every run, sample the chains, write req.out/index.html atomically; returns its path."""
    from difflab.data.atomic import atomic_write

    check_request(req)
    paths = [Path(r).expanduser().resolve() for r in req.runs]
    runs = [read_run(p, n) for p, n in zip(paths, _names(paths))]
    with tempfile.TemporaryDirectory(prefix="difflab-report-") as tmpdir:
        tmp = Path(tmpdir)
        for run in runs:
            _chain(run, req, tmp, log)
        body, nav = sections(runs, tmp)
    title = "difflab report: " + ", ".join(r.name for r in runs)
    subtitle = [f"{len(runs)} run{'s' if len(runs) > 1 else ''}: " + "; ".join(f"{r.name} ({r.kind}) {r.path}" for r in runs),
                f"written {datetime.datetime.now().isoformat(timespec='seconds')} by `difflab report`; self-contained (images inline)"]
    text = H.page(title, subtitle, nav, body)
    out = Path(req.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)

    def write(f) -> None:
        f.write(text.encode("utf-8"))
        os.fchmod(f.fileno(), 0o644)  # a page to be read by anyone, not a private temp file

    return atomic_write(out / "index.html", write)
