"""EMA in isolation: the warm-up schedule (k-diffusion's EMAWarmup), the update rule, and TrainConfig's EMA fields."""

import json
import math

import pytest
import torch
from torch import nn

from conftest import StatelessTask
from difflab.errors import UserError
from difflab.training.config import TrainConfig
from difflab.training.ema import DEFAULT_INV_GAMMA, DEFAULT_POWER, EMA, ema_decay
from difflab.training.trainer import RunPaths, Trainer


def _initial_weight(cfg: TrainConfig, steps: int) -> float:
    """Weight of the initial parameters in the EMA after `steps` updates: the product of the decays."""
    w = 1.0
    for k in range(steps):
        w *= ema_decay(k, cfg.ema_rate, cfg.ema_power, cfg.ema_inv_gamma)
    return w


@pytest.mark.parametrize("power,inv_gamma", [(2 / 3, 1.0), (3 / 4, 1.0), (1.0, 10.0), (0.5, 0.5)])
def test_decay_matches_closed_form(power, inv_gamma):
    for k in (0, 1, 2, 10, 99, 1000, 31_622, 10**6):
        want = min(0.9999, 1 - (1 + k / inv_gamma) ** -power)
        assert ema_decay(k, 0.9999, power, inv_gamma) == pytest.approx(want, rel=0, abs=1e-15)
    # k-diffusion's documented milestones: power 2/3 reaches 0.999 at ~31.6k steps; 3/4 reaches 0.999 at ~10k.
    assert ema_decay(31_622, 0.9999, 2 / 3) == pytest.approx(0.999, abs=1e-7)
    assert ema_decay(10_000, 0.9999, 3 / 4) == pytest.approx(0.999, abs=1e-7)


def test_decay_starts_at_zero_is_bounded_and_monotone():
    for rate in (0.9999, 0.995, 0.9, 0.0):
        ds = [ema_decay(k, rate, 2 / 3, 1.0) for k in range(0, 200_000, 7)]
        assert ds[0] == 0.0  # the first update copies the weights
        assert all(0.0 <= d <= rate for d in ds)
        assert all(a <= b for a, b in zip(ds, ds[1:]))
    # A rate below the warm-up is reached and then held: 0.995 = 1 - (1 + k)^-2/3 at k = 200^1.5 - 1 ~ 2827.
    assert ema_decay(2826, 0.995, 2 / 3) < 0.995 and ema_decay(2828, 0.995, 2 / 3) == 0.995
    assert ema_decay(10**9, 0.995, 2 / 3) == 0.995


def test_power_zero_is_the_constant_rate():
    assert all(ema_decay(k, 0.9999, 0.0) == 0.9999 for k in (0, 1, 10, 10**6))
    assert all(ema_decay(k, 0.0, p) == 0.0 for k in (0, 5, 10**6) for p in (0.0, 2 / 3))


def test_default_config_forgets_the_initial_weights():
    """The issue: the constant 0.9999 keeps e^-1 of the initial weights after the default 10,000 steps."""
    cfg = TrainConfig()
    assert cfg.steps == 10_000 and cfg.ema_rate == 0.9999
    assert _initial_weight(cfg, cfg.steps) < 1e-3
    # The check can fail: without the warm-up the default run samples ~37% initial weights.
    constant = _initial_weight(TrainConfig(ema_power=0.0), cfg.steps)
    assert constant == pytest.approx(math.exp(-1), rel=1e-3) and constant > 0.3
    # Not only the step-0 copy: the first 1% of training (steps < 100, barely trained) also carries little weight.
    early = 1.0
    for k in range(100, cfg.steps):
        early *= ema_decay(k, cfg.ema_rate, cfg.ema_power, cfg.ema_inv_gamma)
    assert early < 1e-3


def test_ema_defaults_match_train_config():
    cfg = TrainConfig()
    assert (cfg.ema_power, cfg.ema_inv_gamma) == (DEFAULT_POWER, DEFAULT_INV_GAMMA)
    # 2/3 survives the JSON a run's config is saved as.
    assert json.loads(json.dumps(cfg.ema_power)) == cfg.ema_power


def _linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(3, 2)


def _perturb(model: nn.Module, k: int) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(k)))


@pytest.mark.parametrize("power", [2 / 3, 0.0])
def test_update_matches_hand_written_lerp(power):
    model = _linear()
    ema = EMA(model, 0.9, power=power, inv_gamma=1.0)
    want = [p.detach().clone() for p in model.parameters()]
    for k in range(6):
        _perturb(model, k)
        ema.update(model, k)
        d = min(0.9, 1 - (1 + k) ** -power) if power else 0.9
        want = [w + (1 - d) * (p.detach() - w) for w, p in zip(want, model.parameters())]
        for e, w in zip(ema.shadow.parameters(), want):
            torch.testing.assert_close(e, w, rtol=0, atol=1e-6)
    assert ema.decay(0) == (0.0 if power else 0.9)


def test_first_warm_up_update_and_rate_zero_copy_exactly():
    model = _linear()
    warm = EMA(model, 0.9999)  # defaults: the warm-up is on
    zero = EMA(model, 0.0)
    for k in range(3):
        _perturb(model, k)
        zero.update(model, k)
        if k == 0:
            warm.update(model, k)
            assert all(torch.equal(e, p) for e, p in zip(warm.shadow.parameters(), model.parameters()))
        assert all(torch.equal(e, p) for e, p in zip(zero.shadow.parameters(), model.parameters()))
    assert all(not e.requires_grad for e in warm.shadow.parameters())


def test_buffers_are_copied_not_averaged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = EMA(model, 0.99, power=0.0)
    model.train()
    model(torch.randn(8, 3) * 5 + 2)  # moves the running statistics
    _perturb(model, 0)
    ema.update(model, 0)
    for (name, e), b in zip(ema.shadow.named_buffers(), model.buffers()):
        assert torch.equal(e, b), name
    # ... while the parameters are averaged.
    assert not any(torch.equal(e, p) for e, p in zip(ema.shadow.parameters(), model.parameters()))
    assert ema.state_dict().keys() == model.state_dict().keys()


def test_ema_rejects_bad_settings():
    for kw in (dict(rate=1.0), dict(rate=-0.1), dict(rate=0.9, power=-1.0), dict(rate=0.9, power=float("nan")),
               dict(rate=0.9, inv_gamma=0.0), dict(rate=0.9, inv_gamma=float("nan"))):
        with pytest.raises(ValueError):
            EMA(_linear(), **kw)


@pytest.mark.parametrize("key,value", [("ema_power", -0.5), ("ema_power", float("nan")), ("ema_power", float("inf")),
                                       ("ema_inv_gamma", 0.0), ("ema_inv_gamma", -1.0), ("ema_inv_gamma", float("nan")),
                                       ("ema_rate", float("nan")), ("ema_rate", 1.0)])
def test_train_config_rejects_bad_ema_settings(key, value):
    with pytest.raises(UserError, match=f"train.{key} must be") as info:
        TrainConfig(**{key: value})
    assert "\n" not in str(info.value)


def test_train_config_accepts_disabled_warm_up_and_rate_zero():
    assert TrainConfig(ema_power=0.0).ema_power == 0.0
    assert TrainConfig(ema_rate=0.0).ema_rate == 0.0


# ----- the Trainer's use of the schedule: a toy regression task, imported from difflab.training only -------------

class _Regression(StatelessTask):
    """Fits y = x @ w by least squares; no randomness beyond the batch order."""

    def loss(self, model, x, y, draws):
        return ((model(x) - y) ** 2).mean(1), {}


def _trainer(root, **cfg) -> Trainer:
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]])
    cfg = TrainConfig(**{"steps": 6, "batch_size": 8, "lr": 1e-2, "log_every": 1, "checkpoint_every": 3,
                         "sample_every": 0, "keep_last": 0, "device": "cpu", **cfg})
    return Trainer(nn.Linear(3, 2), _Regression(), x, y, cfg, RunPaths(root), torch.device("cpu"), progress=False)


def test_trainer_first_step_copies_weights_and_resume_is_exact(tmp_path):
    t = _trainer(tmp_path / "a", ema_rate=0.9999)
    t.train_step()
    assert all(torch.equal(e, p) for e, p in zip(t.ema.shadow.parameters(), t.model.parameters()))
    t.fit()
    full = {k: v.clone() for k, v in t.ema.state_dict().items()}
    meta = json.loads((tmp_path / "a" / "checkpoints" / "step-6.json").read_text())
    assert meta["ema"] == {"rate": 0.9999, "power": 2 / 3, "inv_gamma": 1.0}

    # Stop at 3, resume in a fresh Trainer: the EMA continues from the step alone, bit for bit.
    t1 = _trainer(tmp_path / "b", ema_rate=0.9999)
    t1.fit(stop_at=3)
    t2 = _trainer(tmp_path / "b", ema_rate=0.9999)
    assert t2.resume() == 3
    t2.fit()
    assert all(torch.equal(full[k], v) for k, v in t2.ema.state_dict().items())


def test_resume_of_a_checkpoint_from_before_the_warm_up_keeps_its_constant_rate(tmp_path):
    t = _trainer(tmp_path, ema_rate=0.9)
    t.fit(stop_at=3)
    js = tmp_path / "checkpoints" / "step-3.json"
    meta = json.loads(js.read_text())
    del meta["ema"]  # as written by the constant-rate EMA
    js.write_text(json.dumps(meta))
    t2 = _trainer(tmp_path, ema_rate=0.9)
    t2.resume()
    assert t2.ema.decay(3) == 0.9 and t2.ema.decay(10**6) == 0.9
