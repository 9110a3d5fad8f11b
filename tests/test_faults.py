"""Fault injection: a training run killed with SIGKILL at seeded random moments, and at each phase of writing a
checkpoint, a grid, a metrics line or rotating old checkpoints, then resumed, ends bit-identical to a run that was
never interrupted (weights, EMA, optimizer state, metrics.jsonl) and leaves no temp or orphan file behind.

The kills happen in real processes. The moments inside a write are reached by a driver (test code, below) that wraps
one library function to SIGKILL its own process at the k-th call; the library has no fault switches of its own.
"""

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import sets, tiny_overrides

pytestmark = pytest.mark.slow

STEPS = 12
OVER = tiny_overrides(steps=STEPS) + ["train.checkpoint_every=2", "train.keep_last=2", "train.sample_every=3", "train.log_every=1"]
TIMING = ("it_per_s", "img_per_s")  # wall-clock columns of metrics.jsonl: the only ones allowed to differ

DRIVER = r'''
import os, signal, sys
hook, k = sys.argv[1], int(sys.argv[2])
calls = {"n": 0}

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def counted():
    calls["n"] += 1
    return calls["n"] == k

if hook.startswith("ckpt") or hook == "grid":
    import difflab.training.checkpoint as ck, difflab.data.images as im
    module = im if hook == "grid" else ck
    real = module.atomic_write
    def atomic_write(path, write):
        name = str(path)
        if hook == "ckpt-tensors-mid" and name.endswith(".safetensors") and counted():
            def half(f):
                f.write(b"partial")
                f.flush()
                die()
            return real(path, half)
        if hook == "ckpt-before-json" and name.endswith(".json") and counted():
            die()
        if hook == "ckpt-json-mid" and name.endswith(".json") and counted():
            def half(f):
                f.write(b'{"step": ')
                f.flush()
                die()
            return real(path, half)
        if hook == "grid" and counted():
            def half(f):
                f.write(b"\x89PNG")
                f.flush()
                die()
            return real(path, half)
        return real(path, write)
    module.atomic_write = atomic_write
elif hook == "keep-last":
    import pathlib
    real_unlink = pathlib.Path.unlink
    def unlink(self, missing_ok=False):
        real_unlink(self, missing_ok=missing_ok)
        if self.name.startswith("step-") and self.suffix == ".json" and counted():
            die()  # the old checkpoint's JSON is gone, its tensors not yet
    pathlib.Path.unlink = unlink
elif hook == "metrics":
    import difflab.training.trainer as tr
    real_log = tr.Trainer._log
    def _log(self, row):
        if self.dist.is_main and counted():
            with open(self.paths.metrics, "a") as f:
                f.write('{"step": %d, "loss": 0.1' % row["step"])  # a torn line
            die()
        return real_log(self, row)
    tr.Trainer._log = _log
from difflab.cli.main import main
sys.exit(main(sys.argv[3:]))
'''


def _env():
    # One thread everywhere: training results depend on the thread count, and every process here must agree.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _train(out: Path, *extra: str, driver: Path | None = None, hook: str = "", k: int = 0, kill_after: float | None = None):
    args = ["train", "--out", str(out), "--quiet", *sets(OVER), *extra]
    cmd = [sys.executable, str(driver), hook, str(k), *args] if driver else [sys.executable, "-m", "difflab.cli.main", *args]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.kill()
    out_, err = proc.communicate(timeout=300)
    return proc.returncode, err


def _state(run: Path) -> tuple[dict, list[dict]]:
    ck = sorted((run / "checkpoints").glob("step-*.safetensors"), key=lambda p: int(p.stem.split("-")[1]))[-1]
    rows = [{k: v for k, v in json.loads(ln).items() if k not in TIMING} for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return load_file(str(ck)), rows


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    code, err = _train(out)
    assert code == 0, err
    return _state(out)


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    path = tmp_path_factory.mktemp("driver") / "driver.py"
    path.write_text(DRIVER)
    return path


def _resume_and_compare(run: Path, reference, what: str):
    code, err = _train(run, "--resume")
    assert code == 0, f"{what}: resume failed: {err}"
    tensors, rows = _state(run)
    ref_tensors, ref_rows = reference
    assert tensors.keys() == ref_tensors.keys(), what
    bad = [k for k in tensors if k != "rng.torch" and not (tensors[k] == ref_tensors[k]).all()]
    assert not bad, f"{what}: differs from the uninterrupted run in {bad[:5]}"
    assert rows == ref_rows, f"{what}: metrics.jsonl differs"
    stray = [p for p in run.rglob("*") if p.name.endswith(".tmp")
             or (p.suffix == ".safetensors" and p.name.startswith("step-") and not p.with_suffix(".json").exists())]
    assert not stray, f"{what}: left {stray}"


@pytest.mark.parametrize("hook,k", [("ckpt-tensors-mid", 1), ("ckpt-tensors-mid", 3), ("ckpt-before-json", 2), ("ckpt-json-mid", 3),
                                    ("keep-last", 1), ("grid", 2), ("metrics", 5)])
def test_kill_inside_a_write_then_resume(tmp_path, reference, driver, hook, k):
    run = tmp_path / "run"
    code, err = _train(run, driver=driver, hook=hook, k=k)
    assert code == -9, f"{hook} #{k} did not kill the process (exit {code}): {err[-500:]}"
    _resume_and_compare(run, reference, f"{hook} #{k}")


def test_kill_at_ten_seeded_random_moments(tmp_path, reference):
    """SIGKILL after a random delay (seeded) into the process's life: start-up, steps, checkpoints, the end."""
    rng = random.Random(1234)
    t0 = time.perf_counter()
    code, _ = _train(tmp_path / "timing")
    span = time.perf_counter() - t0  # this machine's whole run, start-up included
    for trial in range(10):
        run = tmp_path / f"run-{trial}"
        delay = rng.uniform(0.3, 1.0) * span
        _train(run, kill_after=delay)
        if not (run / "config.json").exists():  # killed before it wrote anything: a fresh start is the one command
            code, err = _train(run)
            assert code == 0, err
            continue
        _resume_and_compare(run, reference, f"kill at {delay:.2f}s of {span:.2f}s")
