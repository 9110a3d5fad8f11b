"""The DiT run kind end to end on the CPU: `difflab train --config digits-dit`, then the commands every diffusion run
takes (samplers, classifier-free guidance, eval, nll, resume rules) work on it unchanged."""

import json
import math

import numpy as np
import pytest

from conftest import cli, one_line_error
from difflab.denoiser import ModelDenoiser
from difflab.experiments.runs import GeneratorRun
from difflab.nets import DiT
from difflab.runs import DiTRunConfig, RunConfig, kind_of_config, load_run, resolve_config

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["train.steps=3", "train.batch_size=16", "train.log_every=1", "train.checkpoint_every=3", "train.sample_every=0",
        "train.keep_last=0", "train.ema_rate=0.9", "model.depth=2", "model.hidden_size=32", "model.num_heads=4",
        "process.T=50", "sample.steps=4", "sample.grid_size=4"]


def _sets(items):
    return [a for s in items for a in ("--set", s)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from difflab.cli.main import main

    out = tmp_path_factory.mktemp("dit") / "run"
    assert main(["train", "--config", "digits-dit", "--out", str(out), "--quiet", *_sets(TINY)]) == 0
    return out


def test_digits_dit_is_a_dit_run_config_with_dits_recipe():
    cfg = resolve_config("digits-dit")
    assert isinstance(cfg, DiTRunConfig) and isinstance(cfg, RunConfig)  # every RunConfig section and check, a DiT network
    assert kind_of_config(cfg).name == "dit" and kind_of_config(resolve_config("digits")).name == "diffusion"
    m = cfg.model
    assert (m.image_size // m.patch_size) ** 2 == 16 and m.learn_sigma and m.class_dropout_null
    assert cfg.denoiser.var_type == "learned_range" and cfg.loss.type == "hybrid" and cfg.train.label_dropout == 0.1


def test_trained_run_loads_as_a_dit_denoiser(run_dir):
    run = load_run(run_dir)
    assert run.kind == "dit" and isinstance(run.model, DiT) and isinstance(run.denoiser, ModelDenoiser)
    assert json.loads((run_dir / "config.json").read_text())["kind"] == "dit"
    assert (run_dir / "samples" / "step-3.png").exists() and (run_dir / "plots" / "loss.png").exists()


def test_sample_with_ddim_and_with_classifier_free_guidance(run_dir, tmp_path, capsys):
    code, out, err = cli(["sample", "--run", run_dir, "--sampler", "ddim", "--steps", 3, "--n", 6, "--out", tmp_path / "a.png"], capsys)
    assert code == 0, err
    assert (tmp_path / "a.png").exists() and "sampler: ddim  steps: 3" in out
    code, out, err = cli(["sample", "--run", run_dir, "--guidance", "cfg", "--scale", 3, "--class", 7, "--steps", 3, "--n", 4,
                          "--out", tmp_path / "b.npz"], capsys)
    assert code == 0, err
    assert "guidance: cfg scale 3" in out
    saved = np.load(tmp_path / "b.npz")
    assert saved["arr_0"].shape == (4, 8, 8, 1) and (saved["arr_1"] == 7).all()


def test_classifier_guidance_with_a_noise_aware_classifier(run_dir, tmp_path, capsys):
    from difflab.cli.main import main

    clf = tmp_path / "clf"  # trained 2 steps: guidance only has to run through the DiT's denoiser, not to be good
    clf_sets = ["train.steps=2", "train.batch_size=16", "train.log_every=1", "train.checkpoint_every=2", "train.keep_last=0",
                "train.ema_rate=0", "model.model_channels=8", "model.channel_mult=[1,2]", "model.attention_resolutions=[4]",
                "model.num_head_channels=8", "model.norm_groups=4", "process.T=50", "eval.timesteps=2", "eval.repeats=1"]
    assert main(["classifier", "train", "--data", "digits:train", "--out", str(clf), "--quiet", *_sets(clf_sets)]) == 0
    code, out, err = cli(["sample", "--run", run_dir, "--guidance", "classifier", "--classifier", clf, "--scale", 2, "--class", 4,
                          "--steps", 3, "--n", 4, "--out", tmp_path / "c.npz"], capsys)
    assert code == 0, err
    assert "guidance: classifier scale 2" in out and (np.load(tmp_path / "c.npz")["arr_1"] == 4).all()


def test_eval_and_nll_take_the_run(run_dir, tmp_path, capsys):
    res = tmp_path / "r.json"
    code, _, err = cli(["eval", "--samples", run_dir, "--ref", "digits:test", "--features", "digits", "--metrics", "fid",
                        "--n", 70, "--steps", 2, "--sampler", "ddim", "--out", res, "--quiet"], capsys)
    assert code == 0, err
    assert math.isfinite(json.loads(res.read_text())["fid"])
    code, out, err = cli(["nll", "--run", run_dir, "--n", 4], capsys)
    assert code == 0, err
    assert "bits/dim" in out


def test_compare_scores_it_as_a_diffusion_model(run_dir, tmp_path, capsys):
    run = GeneratorRun(run_dir, "dit", json.loads((run_dir / "config.json").read_text()))
    assert run.diffusion and run.conditional and run.default_steps() == 4 and run.label == "DiT"
    code, _, err = cli(["compare", "--runs", run_dir, "--ref", "digits:test", "--features", "digits", "--n", 70, "--steps", 2,
                        "--trilemma-steps", 3, "--out", tmp_path / "cmp", "--quiet"], capsys)
    assert code == 0, err
    points = json.loads((tmp_path / "cmp" / "compare.json").read_text())["trilemma"]
    assert sorted(p["steps"] for p in points) == [2, 3] and {p["kind"] for p in points} == {"dit"}  # stepped like any diffusion run


def test_resume_keeps_the_network_fixed(run_dir, capsys):
    code, _, err = cli(["train", "--out", run_dir, "--resume", *_sets([*TINY, "model.depth=3"])], capsys)
    assert "'model' section differs" in one_line_error(code, err)
