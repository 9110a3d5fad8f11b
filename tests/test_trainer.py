"""Trainer: exact resume, atomic checkpoints, and 2-process DDP equal to 1 process on the same global batch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_overrides
from difflab.runs import resolve_config
from difflab.runs import train_run
from difflab.training.trainer import batch_indices


def _final(run: Path) -> dict:
    ck = sorted((run / "checkpoints").glob("step-*.safetensors"), key=lambda p: int(p.stem.split("-")[1]))[-1]
    return load_file(str(ck))


def test_batch_indices_cover_each_epoch_once():
    n, b = 10, 4
    idx = torch.cat([batch_indices(0, s, b, n) for s in range(5)])  # 20 positions = 2 epochs
    assert sorted(idx[:10].tolist()) == list(range(10))
    assert sorted(idx[10:20].tolist()) == list(range(10))
    assert not torch.equal(idx[:10], idx[10:20])  # a new permutation per epoch
    assert torch.equal(batch_indices(0, 3, b, n), batch_indices(0, 3, b, n))


@pytest.mark.parametrize("loss", ["simple", "loss_aware"])
def test_killed_and_resumed_run_is_bit_identical(tmp_path, loss):
    """A run stopped after its step-2 checkpoint and resumed ends bit-identical to an uninterrupted run."""
    over = tiny_overrides(steps=5) + ["model.dropout=0.1"]  # dropout: the global RNG must be restored too
    if loss == "loss_aware":
        over += ["loss.type=vlb", "loss.timestep_sampling=loss_aware", "loss.loss_history=1"]
    cfg = resolve_config("digits", over)
    train_run(cfg, tmp_path / "a", progress=False)
    train_run(cfg, tmp_path / "b", progress=False, stop_at=2)
    # the killed run may have logged past its checkpoint; resume drops those lines
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "loss": 123.0}) + "\n")
    train_run(cfg, tmp_path / "b", progress=False, resume=True)
    a, b = _final(tmp_path / "a"), _final(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la = [json.loads(x)["loss"] for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert la == lb


def test_resume_refuses_a_changed_model(tmp_path):
    from difflab.errors import UserError

    cfg = resolve_config("digits", tiny_overrides(steps=2))
    train_run(cfg, tmp_path / "r", progress=False)
    cfg2 = resolve_config("digits", tiny_overrides(steps=2) + ["model.model_channels=32"])
    with pytest.raises(UserError, match="'model' section differs"):
        train_run(cfg2, tmp_path / "r", progress=False, resume=True)


def test_checkpoints_keep_last_and_are_complete(tmp_path):
    cfg = resolve_config("digits", tiny_overrides(steps=6) + ["train.keep_last=2", "train.checkpoint_every=1"])
    train_run(cfg, tmp_path / "r", progress=False)
    names = sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir())
    assert names == ["step-5.json", "step-5.safetensors", "step-6.json", "step-6.safetensors"]
    assert not list((tmp_path / "r" / "checkpoints").glob(".*tmp"))
    assert (tmp_path / "r" / "plots" / "loss.png").stat().st_size > 0
    assert (tmp_path / "r" / "samples" / "step-6.png").exists()


def test_grad_accumulation_matches_one_big_batch(tmp_path):
    base = tiny_overrides(steps=3) + ["model.dropout=0.0"]
    train_run(resolve_config("digits", base), tmp_path / "a", progress=False)
    train_run(resolve_config("digits", base + ["train.grad_accum=4"]), tmp_path / "b", progress=False)
    a, b = _final(tmp_path / "a"), _final(tmp_path / "b")
    for k in a:
        if k.startswith("model."):
            assert torch.allclose(a[k], b[k], atol=1e-5), k


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process(tmp_path):
    """torchrun with 2 CPU (gloo) ranks trains the same weights as 1 process on the same global batch."""
    over = tiny_overrides(steps=3) + ["model.dropout=0.0"]
    train_run(resolve_config("digits", over), tmp_path / "one", progress=False)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           f"--master_port={_free_port()}", "--master_addr=127.0.0.1", "-m", "difflab.cli.main", "train",
           "--config", "digits", "--out", str(tmp_path / "two"), "--quiet"]
    for o in over:
        cmd += ["--set", o]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _final(tmp_path / "one"), _final(tmp_path / "two")
    for k in a:
        if k.startswith(("model.", "ema.")):
            assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
