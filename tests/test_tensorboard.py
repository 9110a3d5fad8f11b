"""TensorBoard events of a run: the metrics.jsonl rows, the EMA decay and the sample grids, one point per step after a
resume, eval metrics at the scored checkpoint's step, and nothing (but one note) when turned off or not installed."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import cli, tiny_overrides
from difflab.runs import resolve_config, train_run

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]


def board(run: Path) -> EventAccumulator:
    """Every event of RUN/tensorboard/, as TensorBoard loads it (purged points dropped), all images kept."""
    ea = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    return ea


def rows(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def points(ea: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in ea.Scalars(tag)]


def train(out: Path, steps: int = 4, extra: tuple[str, ...] = (), **kw) -> Path:
    cfg = resolve_config("digits", tiny_overrides(steps=steps) + ["train.sample_every=2", *extra])
    return train_run(cfg, out, progress=False, **kw)


def test_events_are_the_metrics_rows_the_ema_decay_and_the_grids(tmp_path):
    run = train(tmp_path / "r")
    ea, log = board(run), rows(run)
    columns = {k for r in log for k in r if k != "step"}
    assert set(ea.Tags()["scalars"]) == {f"train/{k}" for k in columns} | {"train/ema_decay"}
    assert {"loss", "lr", "grad_norm", "it_per_s", "img_per_s"} <= columns
    steps = [r["step"] for r in log]
    assert steps == [1, 2, 3, 4]
    for key in columns:  # every numeric column, at its row's step, to float32 precision
        got = points(ea, f"train/{key}")
        assert [s for s, _ in got] == steps, key
        np.testing.assert_allclose([v for _, v in got], [r[key] for r in log], rtol=1e-6, err_msg=key)
    # The decay of the update that ended step s (update k = s - 1): k-diffusion's warm-up, ema_rate 0.9, power 2/3, inv_gamma 1.
    decay = points(ea, "train/ema_decay")
    assert [s for s, _ in decay] == steps
    np.testing.assert_allclose([v for _, v in decay], [min(0.9, 1 - (1 + (s - 1)) ** (-2 / 3)) for s in steps], rtol=1e-6)
    assert decay[0][1] == 0.0 and decay[-1][1] > decay[1][1]
    # One grid per PNG in samples/, the same pixels (TensorBoard stores RGB; the digits are gray).
    images = ea.Images("samples")
    assert [e.step for e in images] == [2, 4] and sorted(p.name for p in (run / "samples").iterdir()) == ["step-2.png", "step-4.png"]
    for e in images:
        png = np.asarray(Image.open(run / "samples" / f"step-{e.step}.png").convert("RGB"))
        got = np.asarray(Image.open(io.BytesIO(e.encoded_image_string)).convert("RGB"))
        assert (e.height, e.width) == png.shape[:2] == (70, 70)  # 2 x 2 cells of 8 x 8 upscaled 4x, 2 px padding
        assert np.array_equal(got, png), e.step


def test_turned_off_writes_no_events(tmp_path):
    run = train(tmp_path / "r", steps=2, extra=("train.tensorboard=false",))
    assert not (run / "tensorboard").exists()
    assert [r["step"] for r in rows(run)] == [1, 2]
    assert json.loads((run / "config.json").read_text())["train"]["tensorboard"] is False


@pytest.mark.parametrize("how", ["paused", "killed"])
def test_resumed_run_has_one_point_per_step(tmp_path, how):
    """A run paused at its step-2 checkpoint, or killed after logging steps 3-4 but before checkpointing them, and resumed:
    each step once, the values of the resumed session (= metrics.jsonl), as an uninterrupted run would show."""
    run = tmp_path / "r"
    if how == "paused":
        train(run, stop_at=2)
    else:
        train(run)
        for f in (run / "checkpoints").glob("step-4.*"):
            f.unlink()  # the events of steps 3 and 4 are on disk, their checkpoint is not: resume starts at 2 again
    train(run, resume=True)
    ea, log = board(run), rows(run)
    loss = points(ea, "train/loss")
    assert [s for s, _ in loss] == [1, 2, 3, 4]
    np.testing.assert_allclose([v for _, v in loss], [r["loss"] for r in log], rtol=1e-6)
    assert [s for s, _ in points(ea, "train/ema_decay")] == [1, 2, 3, 4]
    # A paused run drew no grid at its stop (nor a PNG); either way each grid step appears once.
    pngs = sorted(int(p.stem.split("-")[1]) for p in (run / "samples").iterdir())
    assert [e.step for e in ea.Images("samples")] == pngs == ([4] if how == "paused" else [2, 4])
    assert len(list((run / "tensorboard").iterdir())) == 2  # one event file per training session


def test_eval_adds_the_metrics_at_the_checkpoint_step(tmp_path, capsys):
    run = train(tmp_path / "r")
    off = train(tmp_path / "off", steps=2, extra=("train.tensorboard=false",))
    common = ["--ref", "digits:test", "--features", "digits", "--metrics", "fid,pr", "--n", 80, "--steps", 2,
              "--cache-dir", tmp_path / "cache", "--device", "cpu", "--quiet"]
    fid = {}
    for step, samples in ((4, run), (2, run / "checkpoints" / "step-2.safetensors")):
        code, out, err = cli(["eval", "--samples", samples, *common, "--out", tmp_path / f"e{step}.json"], capsys)
        assert code == 0, err
        res = json.loads((tmp_path / f"e{step}.json").read_text())
        assert res["sampling"]["step"] == step
        assert f"{'FID':<10} {res['fid']:>12.4f}" in out  # the printed FID is the JSON's
        fid[step] = res
    ea = board(run)
    assert {t for t in ea.Tags()["scalars"] if t.startswith("eval")} == {"eval/fid", "eval/precision", "eval/recall"}
    for tag in ("fid", "precision", "recall"):
        got = sorted(points(ea, f"eval/{tag}"))
        assert [s for s, _ in got] == [2, 4]
        np.testing.assert_allclose([v for _, v in got], [fid[2][tag], fid[4][tag]], rtol=1e-6)
    assert len(points(ea, "train/loss")) == 4  # the training curves stay as they were
    code, _, err = cli(["eval", "--samples", off, *common], capsys)
    assert code == 0, err
    assert not (off / "tensorboard").exists()  # that run was trained with train.tensorboard=false


def test_without_the_package_training_says_so_once(tmp_path):
    """With `tensorboard` unimportable, training works, writes metrics.jsonl and no events, and notes it on one line."""
    code = ("import sys; sys.modules['tensorboard'] = None; sys.path.insert(0, 'tests')\n"
            "from conftest import tiny_overrides\n"
            "from difflab.runs import resolve_config, train_run\n"
            f"train_run(resolve_config('digits', tiny_overrides(steps=2) + ['train.sample_every=1']), {str(tmp_path / 'r')!r}, progress=False)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    notes = [ln for ln in proc.stderr.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and "tensorboard" in notes[0] and "metrics.jsonl" in notes[0], proc.stderr
    assert not (tmp_path / "r" / "tensorboard").exists()
    assert [r["step"] for r in rows(tmp_path / "r")] == [1, 2]
