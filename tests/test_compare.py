"""`difflab compare` on tiny runs: every report file, the table's content, the trilemma, and one-line errors."""

import json
from pathlib import Path

import pytest

from conftest import tiny_overrides
from difflab.cli.main import main
from difflab.experiments.compare import REPORT_FILES, seed_ordering
from difflab.experiments.runs import open_run, training_curve
from test_baselines import TINY_GAN, TINY_VAE


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from difflab.runs import resolve_config
    from difflab.runs import train_run

    root = tmp_path_factory.mktemp("runs")
    uncond = ["model.class_dropout_null=false", "model.num_classes=null"]
    train_run(resolve_config("digits", tiny_overrides(steps=2) + uncond), root / "ddpm", progress=False)
    train_run(resolve_config("digits-vae", TINY_VAE), root / "vae", progress=False)
    train_run(resolve_config("digits-dcgan", TINY_GAN), root / "dcgan", progress=False)
    return [root / "ddpm", root / "vae", root / "dcgan"]


def _one_line_error(code, err):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_compare_writes_every_report_file(runs, cache, tmp_path, capsys):
    out = tmp_path / "report"
    args = ["compare", "--runs", *map(str, runs), "--features", "digits", "--n", "70", "--trilemma-steps", "2,3",
            "--cache-dir", str(cache), "--out", str(out), "--quiet"]
    assert main(args + ["--curve"]) == 0
    printed = capsys.readouterr().out
    for f in REPORT_FILES:
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    rep = json.loads((out / "compare.json").read_text())
    assert [r["model"] for r in rep["table"]] == ["Diffusion", "VAE", "DCGAN"]
    for r in rep["table"]:
        assert {"precision", "recall", "fid", "kid", "kid_std", "images_per_s", "nfe", "train_steps"} <= r.keys()
        assert r["n"] == 70 and r["images_per_s"] > 0
    assert rep["table"][0]["nfe"] == 5 and rep["table"][1]["nfe"] == rep["table"][2]["nfe"] == 1  # the run's sample.steps=5
    # Trilemma: diffusion at 2, 3 and its table steps (5); the baselines once each.
    diff = sorted(p["nfe"] for p in rep["trilemma"] if p["kind"] == "diffusion")
    assert diff == [2, 3, 5] and len(rep["trilemma"]) == 5
    assert rep["floor"]["data"] == "digits:train" and rep["floor"]["fid"] < min(r["fid"] for r in rep["table"])
    assert set(rep["ordering"]) >= {"fid_diffusion_lt_dcgan_lt_vae", "recall_highest_diffusion"}
    table = (out / "table.md").read_text()
    assert "| Diffusion |" in table and "| VAE |" in table and "| DCGAN |" in table and "Seed 000" in table and "327.2013" in table
    assert "images/s" in (out / "trilemma.md").read_text()
    assert "Precision" in printed
    # --curve: every kept checkpoint scored (diffusion at steps 2; the baselines at 2 and 4)
    steps = {(p["model"], p["step"]) for p in rep["curve"]}
    assert steps == {("Diffusion", 2), ("VAE", 2), ("VAE", 4), ("DCGAN", 2), ("DCGAN", 4)}
    assert (out / "curve.png").stat().st_size > 0 and "| VAE | 4 |" in (out / "curve.md").read_text()
    # The report is not overwritten without --force.
    code = main(args)
    assert "--force" in _one_line_error(code, capsys.readouterr().err)
    assert main(args + ["--force"]) == 0


def test_seed_ordering():
    rows = [{"kind": "diffusion", "model": "Diffusion", "fid": 1.0, "recall": 0.9},
            {"kind": "dcgan", "model": "DCGAN", "fid": 2.0, "recall": 0.5},
            {"kind": "vae", "model": "VAE", "fid": 3.0, "recall": 0.6}]
    o = seed_ordering(rows)
    assert o["fid_diffusion_lt_dcgan_lt_vae"] and o["recall_highest_diffusion"] and o["fid_order"] == "Diffusion < DCGAN < VAE"
    rows[1]["fid"] = 0.5
    assert not seed_ordering(rows)["fid_diffusion_lt_dcgan_lt_vae"]
    assert seed_ordering(rows[:2]) == {}


def test_training_curve_accumulates_time(tmp_path):
    m = tmp_path / "metrics.jsonl"
    m.write_text("".join(json.dumps(r) + "\n" for r in ({"step": 10, "it_per_s": 5.0, "loss": 1}, {"step": 30, "it_per_s": 10.0, "loss": 0.5})))
    rows = training_curve(m)
    assert [r["time_s"] for r in rows] == [2.0, 4.0]


def test_open_run_kinds(runs):
    assert [open_run(r).kind for r in runs] == ["diffusion", "vae", "dcgan"]


@pytest.mark.parametrize("extra,needle", [
    (["--runs", "MISSING"], "does not exist"),
    (["--data", "digits", "--budget", "0"], "--budget"),
    (["--data", "digits", "--budget", "-1"], "--budget"),
    (["--budget", "1"], "--data"),
    (["--runs", "RUN", "--budget", "1", "--data", "digits"], "not both"),
    (["--runs", "RUN", "--n", "1"], "--n"),
    (["--runs", "RUN", "--n", "50"], "at least 65 samples (--n)"),  # FID on the 64-d digits features
    (["--data", "digits", "--budget", "1", "--n", "50"], "at least 65 samples (--n)"),  # before any training
    (["--runs", "RUN", "--trilemma-steps", "0,5"], "--trilemma-steps"),
    (["--data", "digits", "--budget", "1", "--trilemma-steps", "x"], "integers"),  # before any training
    (["--data", "digits", "--budget", "1", "--features", "magic"], "unknown --features 'magic'; valid: digits, inception"),
    (["--runs", "RUN", "--trilemma-steps", "a,b"], "integers"),
    (["--runs", "RUN", "--features", "magic"], "unknown --features 'magic'; valid: digits, inception"),
    ([], "--runs"),
])
def test_bad_input_is_a_one_line_error(runs, cache, tmp_path, capsys, extra, needle):
    extra = [str(runs[0]) if a == "RUN" else str(tmp_path / "missing") if a == "MISSING" else a for a in extra]
    code = main(["compare", *extra, "--cache-dir", str(cache), "--out", str(tmp_path / "rep"), "--quiet"])
    assert needle in _one_line_error(code, capsys.readouterr().err)
    assert not (tmp_path / "rep" / "table.md").exists() and not (tmp_path / "rep" / "runs").exists()


def test_a_folder_without_a_run_or_checkpoint(tmp_path, cache, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["compare", "--runs", str(tmp_path / "empty"), "--cache-dir", str(cache), "--out", str(tmp_path / "rep")])
    assert "not a run folder" in _one_line_error(code, capsys.readouterr().err)
    (tmp_path / "untrained").mkdir()
    (tmp_path / "untrained" / "config.json").write_text("{}")
    code = main(["compare", "--runs", str(tmp_path / "untrained"), "--cache-dir", str(cache), "--out", str(tmp_path / "rep")])
    assert "no checkpoint" in _one_line_error(code, capsys.readouterr().err)


@pytest.mark.slow
def test_budget_mode_trains_three_runs_then_compares(tmp_path, cache, capsys):
    """--data digits --budget: three runs trained for the same few seconds (a hard stop), then the report."""
    out = tmp_path / "rep"
    code = main(["compare", "--data", "digits", "--budget", "0.03", "--n", "70", "--steps", "2", "--trilemma-steps", "1",
                 "--cache-dir", str(cache), "--out", str(out), "--quiet", "--threads", "1", "--clock", "cpu", "--curve"])
    assert code == 0, capsys.readouterr().err
    rep = json.loads((out / "compare.json").read_text())
    assert set(rep["budget"]["runs"]) == {"ddpm", "vae", "dcgan"} and rep["budget"]["clock"] == "cpu"
    assert {p["model"] for p in rep["curve"]} == {"Diffusion", "VAE", "DCGAN"}
    for name in ("ddpm", "vae", "dcgan"):
        run = Path(out / "runs" / name)
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert rows[-1].get("budget_stop") and rows[-1]["step"] == rep["budget"]["runs"][name]["steps"]  # the budget stopped it
        assert json.loads((run / "config.json").read_text())["train"]["lr_schedule"] == "constant"
    assert json.loads((out / "runs" / "ddpm" / "config.json").read_text())["model"]["num_classes"] is None  # unconditional, like the baselines
