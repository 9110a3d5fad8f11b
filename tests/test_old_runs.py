"""Run folders written before runs carried a "kind" (and before the EMA warm-up) still load, train on and sample."""

import json

import pytest
import torch

from conftest import sets, tiny_overrides
from difflab.cli.main import main
from difflab.runs import load_run, resolve_config, run_kind, train_run


def _strip(run, *, config_kind=True, checkpoint_kind=True, ema_keys=True):
    """Make `run` look as the previous layout wrote it: no "kind" in config.json / checkpoint JSONs, no EMA warm-up keys."""
    cfg = json.loads((run / "config.json").read_text())
    if config_kind:
        cfg.pop("kind", None)
    if ema_keys:
        for k in ("ema_power", "ema_inv_gamma"):
            cfg["train"].pop(k, None)
    (run / "config.json").write_text(json.dumps(cfg))
    for meta_path in (run / "checkpoints").glob("step-*.json"):
        meta = json.loads(meta_path.read_text())
        if checkpoint_kind:
            meta.pop("kind", None)
        meta["config"].pop("kind", None)
        if ema_keys:
            meta.pop("ema", None)
            for k in ("ema_power", "ema_inv_gamma"):
                meta["config"]["train"].pop(k, None)
        meta_path.write_text(json.dumps(meta))


def test_an_old_diffusion_run_loads_samples_and_resumes(tmp_path):
    run = train_run(resolve_config("digits", tiny_overrides(steps=2)), tmp_path / "old", progress=False)
    before = load_run(run).model.state_dict()
    _strip(run)
    assert run_kind(run) == "diffusion"
    old = load_run(run)
    assert old.kind == "diffusion" and all(torch.equal(before[k], v) for k, v in old.model.state_dict().items())
    assert old.cfg.kind == "diffusion" and old.denoiser.process.T == 50
    # resume: the run's config lacks the newer keys, and that must not count as a changed section
    assert main(["train", "--out", str(run), "--resume", "--quiet", *sets(["train.steps=3"])]) == 0
    assert load_run(run).step == 3


def test_an_old_classifier_run_is_known_by_its_checkpoints(tmp_path):
    over = ["train.steps=2", "train.batch_size=16", "train.log_every=1", "train.checkpoint_every=2", "model.model_channels=8",
            "model.num_head_channels=8", "model.norm_groups=4", "process.T=20", "eval.timesteps=2", "eval.repeats=1"]
    run = train_run(resolve_config("digits-clf", over), tmp_path / "clf", progress=False)
    _strip(run, checkpoint_kind=False)  # old classifier runs named their kind in the checkpoints only
    assert "kind" not in json.loads((run / "config.json").read_text())
    assert run_kind(run) == "classifier"
    assert load_run(run, kind="classifier").classifier.num_classes == 10
    assert resolve_config(run).kind == "classifier"


@pytest.mark.parametrize("kind", ["vae", "dcgan"])
def test_an_old_baseline_run_loads(tmp_path, kind):
    extra = ["model.base_channels=8", "model.latent_dim=4", "eval.repeats=1"] if kind == "vae" else \
        ["model.g_channels=8", "model.d_channels=8", "model.latent_dim=8"]
    over = ["train.steps=2", "train.batch_size=16", "train.log_every=1", "train.checkpoint_every=2", "sample.grid_size=4", *extra]
    run = train_run(resolve_config(f"digits-{kind}", over), tmp_path / kind, progress=False)
    _strip(run, config_kind=False, checkpoint_kind=False)  # baselines always named their kind
    assert run_kind(run) == kind and load_run(run).kind == kind
