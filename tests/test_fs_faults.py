"""File-system faults (issue 15): a full disk, a read-only file system or a permission refusal reaches the user as one
`error:` line naming the path and the fix, exit status 2, and loses nothing that was there before.

The tests run as whatever user CI is (often root, whom chmod does not stop), so the faults are injected where the
operating system would raise them: `os.replace` (the last step of every atomic write) and the reads of a file.
"""

import errno
import os
from pathlib import Path

import pytest

from conftest import cli, one_line_error, sets, tiny_overrides
from difflab.runs import load_run, resolve_config, train_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_run(resolve_config("digits", tiny_overrides(steps=2)), tmp_path_factory.mktemp("fs") / "run", progress=False)


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def _refuse_replace(monkeypatch, code, when=lambda dst: True):
    """os.replace raises `code` for destinations `when` accepts, as the kernel would at a full or read-only disk."""
    real = os.replace

    def replace(src, dst, *a, **k):
        if when(Path(dst)):
            raise OSError(code, os.strerror(code), str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("code,hint", [(errno.ENOSPC, "free some disk space"), (errno.EROFS, "read-only"),
                                       (errno.EACCES, "check its permissions")])
def test_sample_to_npz_on_a_failing_disk(run, tmp_path, capsys, monkeypatch, code, hint):
    out = tmp_path / "s.npz"
    out.write_bytes(b"an earlier result")
    _refuse_replace(monkeypatch, code)
    rc, _, err = cli(["sample", "--quiet", "--run", run, "--n", "4", "--steps", "2", "--out", out, "--force"], capsys)
    line = one_line_error(rc, err)
    assert hint in line and str(out) in line, line
    assert out.read_bytes() == b"an earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"], "a temp file was left behind"


def test_training_on_a_full_disk_keeps_the_last_checkpoint_and_resumes(tmp_path, capsys, monkeypatch):
    """The disk fills at the second checkpoint: the first survives, the error names it, resume afterwards completes."""
    out = tmp_path / "r"
    over = tiny_overrides(steps=4) + ["train.checkpoint_every=2"]
    _refuse_replace(monkeypatch, errno.ENOSPC, when=lambda dst: dst.name.startswith("step-4"))
    rc, _, err = cli(["train", "--out", out, "--quiet", *sets(over)], capsys)
    line = one_line_error(rc, err)
    assert "No space left on device" in line and "free some disk space" in line, line
    assert load_run(out).step == 2
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], "a temp file was left behind"
    monkeypatch.undo()
    rc, _, err = cli(["train", "--out", out, "--resume", "--quiet"], capsys)
    assert rc == 0, err
    assert load_run(out).step == 4


def test_a_read_only_run_folder_on_resume_changes_nothing(run, tmp_path, capsys, monkeypatch):
    before = _snapshot(run)
    _refuse_replace(monkeypatch, errno.EROFS, when=lambda dst: run in dst.parents)
    rc, _, err = cli(["train", "--out", run, "--resume", "--quiet", "--set", "train.steps=3"], capsys)
    assert "read-only" in one_line_error(rc, err)
    assert _snapshot(run) == before


def test_an_unreadable_checkpoint_is_a_permission_problem_not_a_damaged_file(run, tmp_path, capsys, monkeypatch):
    import difflab.training.checkpoint as checkpoint

    def refuse(path, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(checkpoint, "load_file", refuse)
    rc, _, err = cli(["sample", "--quiet", "--run", run, "--n", "2", "--steps", "2", "--out", tmp_path / "x.png"], capsys)
    line = one_line_error(rc, err)
    assert "permission denied" in line and "damaged" not in line and "chmod" in line, line


def test_an_unreadable_image_is_a_permission_problem_not_a_corrupt_file(tmp_path, capsys, monkeypatch):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / f"{i}.png")
    locked = folder / "1.png"
    real = Path.read_bytes

    def read_bytes(self):
        if self == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    rc, _, err = cli(["stats", "--data", folder, "--features", "digits", "--out", tmp_path / "s.npz"], capsys)
    line = one_line_error(rc, err)
    assert str(locked) in line and "Permission denied" in line and "corrupt" not in line, line


def test_a_damaged_checkpoint_names_the_earlier_one(tmp_path, capsys):
    out = train_run(resolve_config("digits", tiny_overrides(steps=4) + ["train.checkpoint_every=2"]), tmp_path / "r", progress=False)
    (out / "checkpoints" / "step-4.safetensors").write_bytes(b"garbage")
    rc, _, err = cli(["sample", "--quiet", "--run", out, "--n", "2", "--steps", "2", "--out", tmp_path / "x.png"], capsys)
    line = one_line_error(rc, err)
    assert "damaged" in line and "step-2" in line and "--from-step 2" in line, line
    rc, _, err = cli(["sample", "--quiet", "--run", out / "checkpoints" / "step-2.safetensors", "--n", "2", "--steps", "2", "--out",
                      tmp_path / "x.png"], capsys)
    assert rc == 0, err
