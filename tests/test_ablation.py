"""`difflab ablation ddpm` on tiny settings: the six cells' configs, a full run with a deliberately diverging cell, errors."""

import json

import pytest

from conftest import sets, tiny_overrides
from difflab.cli.main import main
from difflab.experiments.ablation import CELL_NAMES, CELLS, AblationRequest, _loss_summary, cell_config


def _one_line_error(code, err):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_cells_map_to_difflab_config_terms(tmp_path):
    req = AblationRequest(out=tmp_path, train_steps=7)
    want = {"mu-L-learned": ("mu", "learned", True, "vlb"), "mu-L-fixed": ("mu", "fixed_small", False, "vlb"),
            "mu-mse": ("mu", "fixed_small", False, "simple"), "eps-L-learned": ("eps", "learned", True, "vlb"),
            "eps-L-fixed": ("eps", "fixed_small", False, "vlb"), "eps-simple": ("eps", "fixed_small", False, "simple")}
    assert set(CELL_NAMES) == set(want)
    for cell in CELLS:
        cfg = cell_config(req, cell)
        got = (cfg.denoiser.parameterization, cfg.denoiser.var_type, cfg.model.learn_sigma, cfg.loss.type)
        assert got == want[cell.name], cell.name
        assert cfg.train.steps == 7 and cfg.model.num_classes is None  # unconditional, so the NLL is log p(x)
    # Ho et al. Table 2's numbers travel with the cells; blanks are the unstable entries.
    by = {c.name: c for c in CELLS}
    # Table 2's facts: the blank entries are the two unstable objectives, and L_simple has the best FID of the rest.
    assert {n for n, c in by.items() if c.paper_fid is None} == {"mu-mse", "eps-L-learned"}
    assert {n for n, c in by.items() if c.paper_is is None} == {"mu-mse", "eps-L-learned"}
    assert min((c.paper_fid, n) for n, c in by.items() if c.paper_fid is not None)[1] == "eps-simple"
    # ... and they reach the report: each cell's row carries its own paper IS and FID, a blank as '–'.
    from difflab.experiments.ablation import ablation_markdown

    rows = [{"objective": c.objective, "paper_is": c.paper_is, "paper_fid": c.paper_fid, "stable": False, "unstable_reason": "test"}
            for c in CELLS]
    md = ablation_markdown({"data": "d", "train_steps": 1, "base": "b", "T": 1, "n": 1, "sampler": "s", "sample_steps": 1, "ref": "r",
                            "n_ref": 1, "features": "f", "nll_n": 1, "nll_data": "n", "rows": rows})
    for c in CELLS:
        fid = "–" if c.paper_fid is None else f"{c.paper_fid:.2f}"
        assert f"| {c.objective.replace('|', chr(92) + '|')} | {c.paper_is or '–'} | {fid} | **no** (test) |" in md, c.name


def test_cell_override_applies_to_one_cell(tmp_path):
    req = AblationRequest(out=tmp_path, train_steps=3, overrides=("train.batch_size=16",), cell_overrides={"eps-simple": ("train.lr=0.5",)})
    by = {c.name: cell_config(req, c) for c in CELLS}
    assert by["eps-simple"].train.lr == 0.5 and by["mu-mse"].train.lr != 0.5
    assert all(c.train.batch_size == 16 for c in by.values())


def test_ablation_runs_six_cells_and_reports_a_diverging_one(tmp_path, capsys):
    """All six cells train and are scored; an absurd learning rate makes eps-simple diverge: reported unstable, not hidden."""
    cache, out = tmp_path / "cache", tmp_path / "abl"
    args = ["ablation", "ddpm", "--data", "digits:train", "--train-steps", "3", "--out", str(out), "--n", "70", "--nll-n", "2",
            "--steps", "5", "--cache-dir", str(cache), "--quiet", *sets(tiny_overrides(steps=3)),
            "--cell-set", "eps-simple:train.lr=1e30", "--cell-set", "eps-simple:train.max_nonfinite=0"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    rep = json.loads((out / "ablation.json").read_text())
    rows = {r["cell"]: r for r in rep["rows"]}
    assert list(rows) == list(CELL_NAMES)
    bad = rows["eps-simple"]
    assert not bad["stable"] and bad["diverged"] and "NaN" in bad["unstable_reason"] and "fid" not in bad
    for name in CELL_NAMES[:-1]:
        r = rows[name]
        assert r["stable"], (name, r["unstable_reason"])
        assert r["fid"] > 0 and r["nll_bpd"] > 0 and r["steps_done"] == 3
    for f in ("ablation.md", "ablation.json", "ablation_losses.png", "ablation_samples.png"):
        assert (out / f).stat().st_size > 0, f
    md = (out / "ablation.md").read_text()
    assert "**no**" in md and "3.17" in md and "13.22" in md and r"\|\|" in md  # escaped norms keep the table intact
    assert "Objective" in printed
    # --reuse keeps every trained (or diverged) cell: nothing is retrained, the same table comes out.
    before = {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("*.safetensors")}
    assert main(args + ["--reuse"]) == 0
    capsys.readouterr()
    assert before == {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("*.safetensors")}
    rows2 = {r["cell"]: r for r in json.loads((out / "ablation.json").read_text())["rows"]}
    assert all(rows2[k]["reused"] for k in CELL_NAMES) and not rows2["eps-simple"]["stable"]
    assert rows2["eps-L-fixed"]["fid"] == pytest.approx(rows["eps-L-fixed"]["fid"])


def test_a_rising_loss_is_a_divergence(tmp_path):
    m = tmp_path / "metrics.jsonl"
    losses = [1.0] * 20 + [50.0] * 10
    m.write_text("".join(json.dumps({"step": i + 1, "loss": v, "skipped": 0}) + "\n" for i, v in enumerate(losses)))
    assert _loss_summary(m)["loss_blew_up"]
    m.write_text("".join(json.dumps({"step": i + 1, "loss": v, "skipped": 0}) + "\n" for i, v in enumerate([5.0] * 5 + [100.0])))
    assert not _loss_summary(m)["loss_blew_up"]  # too few steps to call a trend (the bound's batches are heavy-tailed)
    m.write_text("".join(json.dumps({"step": i + 1, "loss": v}) + "\n" for i, v in enumerate([1.0] * 25 + [float("nan")] * 10)))
    assert _loss_summary(m)["loss_blew_up"]


@pytest.mark.parametrize("extra,needle", [
    (["--train-steps", "0"], "--train-steps must be at least 1"),
    (["--train-steps", "2", "--steps", "0"], "--steps must be at least 1"),
    (["--train-steps", "2", "--cells", "eps-simple,bogus"], "bogus"),
    (["--train-steps", "2", "--cell-set", "bogus:train.lr=1"], "bogus"),
    (["--train-steps", "2", "--cell-set", "eps-simple"], "CELL:KEY=VALUE"),
    (["--train-steps", "2", "--set", "train.nope=1"], "train.nope"),
    (["--train-steps", "2", "--n", "1"], "--n"),
    (["--train-steps", "2", "--n", "50"], "at least 65 samples (--n)"),  # FID on the 64-d digits features, before training
    (["--train-steps", "2", "--force", "--reuse"], "contradict"),
])
def test_bad_input_is_a_one_line_error(tmp_path, capsys, extra, needle):
    code = main(["ablation", "ddpm", "--out", str(tmp_path / "abl"), "--cache-dir", str(tmp_path / "c"), "--quiet", *extra])
    assert needle in _one_line_error(code, capsys.readouterr().err)
    assert not (tmp_path / "abl" / "cells").exists()


def test_existing_ablation_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "abl").mkdir()
    (tmp_path / "abl" / "ablation.md").write_text("keep")
    code = main(["ablation", "ddpm", "--train-steps", "2", "--out", str(tmp_path / "abl"), "--quiet"])
    assert "--reuse" in _one_line_error(code, capsys.readouterr().err)
    assert (tmp_path / "abl" / "ablation.md").read_text() == "keep"


def test_a_bad_request_with_force_deletes_nothing(tmp_path, capsys):
    """--force replaces a report only once the request is known to be valid: a too-small --n keeps the old one."""
    (tmp_path / "abl" / "cells").mkdir(parents=True)
    (tmp_path / "abl" / "ablation.md").write_text("keep")
    code = main(["ablation", "ddpm", "--train-steps", "2", "--n", "50", "--force", "--out", str(tmp_path / "abl"),
                 "--cache-dir", str(tmp_path / "c"), "--quiet"])
    assert "--n" in _one_line_error(code, capsys.readouterr().err)
    assert (tmp_path / "abl" / "ablation.md").read_text() == "keep" and (tmp_path / "abl" / "cells").is_dir()
