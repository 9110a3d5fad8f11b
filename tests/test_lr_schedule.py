"""Trainer.lr_at in isolation: linear warm-up, then constant or cosine decay (Loshchilov & Hutter 2017)."""

import math
import types

import pytest

from difflab.training.config import TrainConfig
from difflab.training.trainer import Trainer


def lr_at(step: int, **cfg) -> float:
    # lr_at reads only self.cfg: no model, data or optimizer needed.
    return Trainer.lr_at(types.SimpleNamespace(cfg=TrainConfig(**cfg)), step)


def test_linear_warm_up_then_constant():
    lr, w = 2e-4, 100
    assert lr_at(0, lr=lr, warmup_steps=w) == pytest.approx(lr / w)
    for k in (0, 1, 49, 98):
        assert lr_at(k, lr=lr, warmup_steps=w) == pytest.approx(lr * (k + 1) / w)
    assert lr_at(w - 1, lr=lr, warmup_steps=w) == lr
    values = [lr_at(k, lr=lr, warmup_steps=w) for k in range(w)]
    assert all(a < b for a, b in zip(values, values[1:]))
    for k in (w, w + 1, 5000, 9999, 10_000, 50_000):
        assert lr_at(k, lr=lr, warmup_steps=w) == lr


def test_no_warm_up_is_the_peak_from_step_zero():
    assert lr_at(0, lr=1e-3) == 1e-3
    assert lr_at(0, lr=1e-3, lr_schedule="cosine", steps=100) == 1e-3


@pytest.mark.parametrize("warmup", [0, 100, 999])
def test_cosine_against_closed_form(warmup):
    lr, steps = 3e-4, 2000
    cfg = dict(lr=lr, warmup_steps=warmup, lr_schedule="cosine", steps=steps)
    for k in range(warmup, steps + 1, 37):
        progress = (k - warmup) / (steps - warmup)
        assert lr_at(k, **cfg) == pytest.approx(0.5 * lr * (1 + math.cos(math.pi * progress)), rel=1e-12, abs=1e-18)
    assert lr_at(warmup, **cfg) == pytest.approx(lr)  # end of warm-up: the peak
    if warmup:
        assert lr_at(warmup - 1, **cfg) == pytest.approx(lr)  # the last warm-up step already reaches it
    mid = warmup + (steps - warmup) / 2
    if mid.is_integer():  # 999 warm-up steps leave an odd 1001: no integer midpoint
        assert lr_at(int(mid), **cfg) == pytest.approx(lr / 2)
    assert lr_at(steps, **cfg) == pytest.approx(0.0, abs=1e-20)
    # Past train.steps (e.g. a config whose steps were lowered) the rate stays 0, never negative.
    for k in (steps + 1, steps + 500, 10 * steps):
        assert 0.0 <= lr_at(k, **cfg) <= 1e-20
    values = [lr_at(k, **cfg) for k in range(warmup, steps + 50)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert min(values) >= 0.0


def test_cosine_midpoint_is_half_the_peak():
    assert lr_at(600, lr=1e-3, warmup_steps=200, lr_schedule="cosine", steps=1000) == pytest.approx(5e-4)
    assert lr_at(500, lr=1e-3, lr_schedule="cosine", steps=1000) == pytest.approx(5e-4)


def test_cosine_warm_up_is_linear_too():
    cfg = dict(lr=1e-3, warmup_steps=10, lr_schedule="cosine", steps=100)
    assert [lr_at(k, **cfg) for k in range(10)] == pytest.approx([1e-3 * (k + 1) / 10 for k in range(10)])


def test_warm_up_as_long_as_the_run():
    # warmup_steps == steps: the whole run warms up and the cosine never starts (no division by zero).
    cfg = dict(lr=1e-3, warmup_steps=50, lr_schedule="cosine", steps=50)
    assert lr_at(49, **cfg) == 1e-3
    assert lr_at(50, **cfg) == 1e-3  # done = 0 / max(1, 0)
