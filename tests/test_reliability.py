"""Reliability contracts (issue 15, first part): --force replaces nothing until the new run exists, a run stopped before
its first checkpoint restarts with --resume, a bad --resume leaves the run as it was, outputs follow the umask."""

import json
import os
import stat

import pytest
import torch

from conftest import StatelessTask, cli, one_line_error, sets, tiny_overrides
from difflab.runs import load_run, resolve_config, train_run


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def run(tmp_path):
    return train_run(resolve_config("digits", tiny_overrides(steps=2)), tmp_path / "run", progress=False)


@pytest.mark.parametrize("extra,needle", [
    (["--set", "data.name=/no/such/folder"], "/no/such/folder"),
    (["--set", "model.in_channels=3"], "model.in_channels"),
])
def test_train_force_with_a_bad_request_keeps_the_old_run(run, capsys, extra, needle):
    before = _snapshot(run)
    code, _, err = cli(["train", "--out", run, "--force", "--quiet", *sets(tiny_overrides(steps=2)), *extra], capsys)
    assert needle in one_line_error(code, err)
    assert _snapshot(run) == before and not (run / ".replaced").exists()


def test_train_force_replaces_once_the_new_run_has_a_checkpoint(run, capsys):
    code, _, err = cli(["train", "--out", run, "--force", "--quiet", *sets(tiny_overrides(steps=3))], capsys)
    assert code == 0, err
    assert load_run(run).step == 3 and not (run / ".replaced").exists()
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 3


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b"\x80\x04K\x01."])
def test_import_force_with_a_bad_checkpoint_keeps_the_old_run(run, tmp_path, capsys, content):
    pt = tmp_path / "64x64_diffusion.pt"
    pt.write_bytes(content)
    before = _snapshot(run)
    code, _, err = cli(["import", "guided-diffusion", "--checkpoint", pt, "--out", run, "--force"], capsys)
    one_line_error(code, err)
    assert _snapshot(run) == before


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('EVIL_MARK', '/tmp/difflab-evil-mark')}",))


def _evil_files(folder):
    """Every shape a pickle can hide in: torch.save's zip (data.pkl), a bare pickle named .npz, an .npz of object arrays."""
    import pickle

    import numpy as np

    folder.mkdir()
    for name in ("64x64_diffusion.pt", "cifar10_uncond_50M_500K.pt", "default_1.pt"):
        torch.save({"x": _Evil()}, folder / name)
    (folder / "bare.npz").write_bytes(pickle.dumps(_Evil()))
    np.savez(folder / "objects.npz", arr_0=np.array([_Evil()], dtype=object))
    for f in folder.iterdir():
        assert b"system" in f.read_bytes(), f"{f.name} does not carry the call"
    return folder


# Every command that reads a user's .pt or .npz, each given a file that would run `touch MARK` if unpickled.
_READERS = [
    "import guided-diffusion --checkpoint {evil}/64x64_diffusion.pt --out {tmp}/r",
    "import improved-diffusion --checkpoint {evil}/cifar10_uncond_50M_500K.pt --out {tmp}/r",
    "eval --samples digits:test --ref digits:train --inception-weights {evil}/default_1.pt",
] + [line.replace("NPZ", f"{{evil}}/{name}") for name in ("bare.npz", "objects.npz") for line in (
    "train --data NPZ --out {tmp}/r",
    "eval --samples NPZ --ref digits:test",
    "eval --samples digits:test --ref NPZ --metrics precision,recall",
    "stats --data NPZ --out {tmp}/s.npz",
    "nll --run {run} --data NPZ",
    "inpaint --run {run} --data NPZ --out {tmp}/o.png",
    "compare --runs {run} --ref NPZ --n 100 --out {tmp}/c",
)]


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    """A trained run that no test here changes."""
    return train_run(resolve_config("digits", tiny_overrides(steps=2)), tmp_path_factory.mktemp("shared") / "run", progress=False)


@pytest.mark.parametrize("line", _READERS)
def test_a_malicious_pickle_never_runs(shared_run, tmp_path, capsys, monkeypatch, line):
    mark = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARK", str(mark))
    evil = _evil_files(tmp_path / "evil")
    code, _, err = cli(line.format(evil=evil, tmp=tmp_path, run=shared_run).split(), capsys)
    evil_name = next(w for w in line.split() if w.startswith("{evil}/"))[len("{evil}/"):]
    assert evil_name in one_line_error(code, err), "the error is not about the malicious file: it was never read"
    assert not mark.exists(), "a pickle was executed"


def test_a_run_stopped_before_its_first_checkpoint_restarts_with_resume(tmp_path, capsys):
    run = tmp_path / "r"
    # as a run killed during start-up leaves it: config.json, no checkpoint
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"kind": "diffusion"}))
    code, _, err = cli(["train", "--out", run, *sets(tiny_overrides(steps=2))], capsys)
    assert "stopped before its first checkpoint: add --resume" in one_line_error(code, err)
    train_run(resolve_config("digits", tiny_overrides(steps=2)), run, force=True, progress=False)
    for p in (run / "checkpoints").iterdir():
        p.unlink()  # now a real config, still no checkpoint
    code, _, err = cli(["train", "--out", run, "--resume", "--quiet"], capsys)
    assert code == 0 and "no checkpoint yet" in err
    assert load_run(run).step == 2


def test_resume_below_the_checkpoint_step_is_an_error_and_changes_nothing(run, capsys):
    before = _snapshot(run)
    code, _, err = cli(["train", "--out", run, "--resume", "--quiet", "--set", "train.steps=1"], capsys)
    assert "past train.steps=1" in one_line_error(code, err)
    assert _snapshot(run) == before


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        run = train_run(resolve_config("digits", tiny_overrides(steps=2)), tmp_path / "r", progress=False)
    finally:
        os.umask(old)
    for name in ("config.json", "checkpoints/step-2.json", "checkpoints/step-2.safetensors"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name


def test_no_checkpoint_during_a_nan_streak_and_the_error_names_the_last_good_one(tmp_path, capsys):
    """Divergence at lr 1e30 after two good steps: the good checkpoint survives keep_last=1, no bad one is written."""
    run = tmp_path / "r"
    over = tiny_overrides(steps=2) + ["train.keep_last=1", "train.checkpoint_every=1"]
    train_run(resolve_config("digits", over), run, progress=False)
    good = (run / "checkpoints" / "step-2.safetensors").read_bytes()
    code, _, err = cli(["train", "--out", run, "--resume", "--quiet", *sets(over + ["train.steps=30", "train.lr=1e30",
                                                                                   "train.max_nonfinite=2", "train.warmup_steps=0"])], capsys)
    line = one_line_error(code, err)
    assert "NaN/Inf" in line and "last good checkpoint is" in line, line
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    last = names[-1]
    assert last.endswith(".safetensors") and str(run / "checkpoints" / last) in line
    step = int(last.split("-")[1].split(".")[0])
    tensors = __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(run / "checkpoints" / last))
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if k.startswith("model.")), "a non-finite checkpoint was written"
    assert step >= 2 and (step > 2 or (run / "checkpoints" / last).read_bytes() == good)
    for ln in (run / "metrics.jsonl").read_text().splitlines():
        json.loads(ln, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.jsonl"))  # strict JSON: NaN is null


def test_resume_sweeps_what_a_killed_run_left(run, capsys):
    ck = run / "checkpoints"
    (ck / ".step-4.safetensors.abc.tmp").write_bytes(b"half")
    (ck / "step-9.safetensors").write_bytes(b"orphan")  # its JSON never got written
    (run / ".config.json.x.tmp").write_text("{")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "lo')  # torn line
    code, _, err = cli(["train", "--out", run, "--resume", "--quiet", "--set", "train.steps=3"], capsys)
    assert code == 0, err
    assert "removed" in err and not (ck / "step-9.safetensors").exists() and not list(run.rglob(".*.tmp"))
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]


def test_fp16_on_the_cpu_is_refused(tmp_path, capsys):
    code, _, err = cli(["train", "--out", tmp_path / "r", "--quiet", *sets(tiny_overrides(steps=1) + ["train.precision=fp16", "train.device=cpu"])],
                       capsys)
    assert "fp16 needs a CUDA GPU" in one_line_error(code, err)


def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    """A real process: SIGTERM mid-training ends it with status 143, a final checkpoint and the resume command."""
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "r"
    over = tiny_overrides(steps=100000) + ["train.checkpoint_every=100000", "train.log_every=1"]
    proc = subprocess.Popen([sys.executable, "-m", "difflab.cli.main", "train", "--out", str(run), "--quiet", *sets(over)],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err and "--resume" in err and "Traceback" not in err
    step = load_run(run).step
    assert step > 0 and f"step-{step}.safetensors" in err
    assert not list(run.rglob(".*.tmp"))


def test_divergence_is_judged_against_the_running_median():
    from difflab.training.faults import MIN_RECENT, is_diverging

    calm = [1.0] * MIN_RECENT
    assert not is_diverging(1e6, calm[:-1], 100.0)  # too little history to judge
    assert is_diverging(101.0, calm, 100.0) and not is_diverging(99.0, calm, 100.0)
    assert not is_diverging(1e9, calm, 0.0)  # off
    assert not is_diverging(float("nan"), calm, 100.0)  # NaN has its own check


class _Spike(StatelessTask):
    """A TrainTask whose loss is the model's own output, forced to jump a million-fold after step 25."""

    def __init__(self):
        self.calls = 0

    def loss(self, model, x, y, draws):
        self.calls += 1
        scale = 1e6 if self.calls > 25 else 1.0
        return (model(x) ** 2).mean(1) * scale + 1.0, {}


def test_a_finite_blow_up_stops_training_without_checkpointing_it(tmp_path):
    from torch import nn

    from difflab.errors import UserError
    from difflab.training.config import TrainConfig
    from difflab.training.trainer import RunPaths, Trainer

    torch.manual_seed(0)
    cfg = TrainConfig(steps=60, batch_size=8, lr=1e-3, log_every=1, checkpoint_every=1, keep_last=2, sample_every=0,
                      max_nonfinite=3, device="cpu", tensorboard=False)
    trainer = Trainer(nn.Linear(3, 2), _Spike(), torch.randn(64, 3), None, cfg, RunPaths(tmp_path), torch.device("cpu"), progress=False)
    with pytest.raises(UserError, match="divergence_factor") as info:
        trainer.fit()
    assert trainer.step == 28 and "step-25.safetensors" in str(info.value)  # the 26th..29th steps diverged; stopped on the 4th
    saved = sorted(int(p.stem.split("-")[1]) for p in (tmp_path / "checkpoints").glob("step-*.json"))
    assert saved == [24, 25]  # keep_last=2 kept the good ones: none was written during the streak


def test_resume_from_an_earlier_checkpoint_keeps_the_later_ones_aside(tmp_path, capsys):
    over = tiny_overrides(steps=6)
    ref = train_run(resolve_config("digits", over), tmp_path / "ref", progress=False)
    run = train_run(resolve_config("digits", over), tmp_path / "run", progress=False)
    code, _, err = cli(["train", "--out", run, "--resume", "--from-step", 3, "--quiet"], capsys)
    assert "no such checkpoint" in one_line_error(code, err) and "2, 4, 6" in err
    code, _, err = cli(["train", "--out", run, "--from-step", 2, "--quiet"], capsys)
    assert "use it with --resume" in one_line_error(code, err)
    code, _, err = cli(["train", "--out", run, "--resume", "--from-step", 2, "--quiet"], capsys)
    assert code == 0, err
    aside = run / "checkpoints" / "superseded-from-2"
    assert sorted(p.name for p in aside.iterdir()) == ["step-4.json", "step-4.safetensors", "step-6.json", "step-6.safetensors"]
    a, b = load_run(ref).model.state_dict(), load_run(run).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # retraining 2 -> 6 from step 2 gives the same run
