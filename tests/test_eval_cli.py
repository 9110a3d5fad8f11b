"""Evaluation end to end: the digits feature classifier (deterministic, cached), `difflab eval`, `stats`, `nll`, bad input."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import cli, one_line_error, tiny_overrides
from difflab.cli.main import main
from difflab.data import load_digits_split, to_uint8_nhwc
from difflab.errors import UserError
from difflab.eval.digits_features import DigitsClassifierConfig, DigitsFeatures, load_or_train_digits_classifier
from difflab.pipelines.evaluate import parse_metrics
from difflab.eval.sources import build_extractor

TINY_CLASSIFIER = DigitsClassifierConfig(epochs=1, width=4, feature_dim=8)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions run ~10x faster on one thread than on two contended ones; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache folder holding the default digits classifier, trained once for the module."""
    folder = tmp_path_factory.mktemp("cache")
    load_or_train_digits_classifier(folder)
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r"
    sets = [a for s in tiny_overrides(steps=2) for a in ("--set", s)]
    assert main(["train", "--config", "digits", "--out", str(out), "--quiet", *sets]) == 0
    return out


def eval_json(capsys, tmp_path, cache, samples, ref, metrics="fid,pr,dc,kid,is", name="r.json", extra=()):
    out = tmp_path / name
    code, stdout, err = cli(["eval", "--samples", samples, "--ref", ref, "--features", "digits", "--metrics", metrics,
                             "--cache-dir", cache, "--quiet", "--kid-subsets", 10, "--out", out, *extra], capsys)
    assert code == 0, err
    return json.loads(out.read_text()), stdout


def write_npz(path, x: torch.Tensor, **extra):
    np.savez(path, arr_0=to_uint8_nhwc(x), **extra)
    return path


# --------------------------------------------------------------------------------- the digits classifier


def test_classifier_training_is_deterministic(tmp_path):
    _, meta_a = load_or_train_digits_classifier(tmp_path / "a", TINY_CLASSIFIER)
    _, meta_b = load_or_train_digits_classifier(tmp_path / "b", TINY_CLASSIFIER)
    wa = load_file(str(tmp_path / "a/digits-classifier/classifier.safetensors"))
    wb = load_file(str(tmp_path / "b/digits-classifier/classifier.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert meta_a["data_fingerprint"] == meta_b["data_fingerprint"] and meta_a["test_accuracy"] == meta_b["test_accuracy"]


def test_default_classifier_is_accurate_and_cached(cache):
    net, meta = load_or_train_digits_classifier(cache)
    assert meta["cached"] is True
    x, y = load_digits_split("test")
    assert meta["test_accuracy"] >= 0.95
    with torch.no_grad():
        assert float((net(x).argmax(1) == y).double().mean()) == pytest.approx(meta["test_accuracy"])
    feats = DigitsFeatures(net, meta).extract(x[:10])
    assert feats["pool"].shape == (10, 64) and feats["logits"].shape == (10, 10)


def test_cache_is_reused_and_a_stale_cache_is_retrained(tmp_path):
    _, first = load_or_train_digits_classifier(tmp_path, TINY_CLASSIFIER)
    weights = tmp_path / "digits-classifier/classifier.safetensors"
    meta_path = weights.with_suffix(".json")
    stamp = weights.stat().st_mtime_ns
    _, again = load_or_train_digits_classifier(tmp_path, TINY_CLASSIFIER)
    assert first["cached"] is False and again["cached"] is True and weights.stat().st_mtime_ns == stamp
    # Another config (seed) does not match the cache: retrained, and the cache now holds the new one.
    _, other = load_or_train_digits_classifier(tmp_path, dataclasses.replace(TINY_CLASSIFIER, seed=1))
    assert other["cached"] is False and json.loads(meta_path.read_text())["config"]["seed"] == 1
    # A fingerprint of other training data does not match either.
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "data_fingerprint": "0" * 64}))
    _, refit = load_or_train_digits_classifier(tmp_path, dataclasses.replace(TINY_CLASSIFIER, seed=1))
    assert refit["cached"] is False and refit["data_fingerprint"] == meta["data_fingerprint"]
    # Damaged weights are retrained, not an error.
    weights.write_bytes(b"garbage")
    _, fixed = load_or_train_digits_classifier(tmp_path, dataclasses.replace(TINY_CLASSIFIER, seed=1))
    assert fixed["cached"] is False


def test_digits_features_reject_other_image_shapes(cache):
    extractor = build_extractor("digits", cache_dir=cache)
    with pytest.raises(UserError, match="1x8x8"):
        extractor.extract(torch.zeros(2, 3, 8, 8))


def test_metric_groups():
    assert parse_metrics("fid,pr,dc") == ("fid", "precision", "recall", "density", "coverage")
    assert parse_metrics("kid,is,precision") == ("kid", "is", "precision")


# --------------------------------------------------------------------------------- eval, stats


def test_real_vs_real_floor_is_far_below_noise(tmp_path, capsys, cache):
    real, stdout = eval_json(capsys, tmp_path, cache, "digits:test", "digits:train")
    assert {"fid", "precision", "recall", "density", "coverage", "kid", "kid_std", "is", "is_std"} <= real.keys()
    assert real["n_samples"] == 297 and real["n_ref"] == 1500 and real["features"] == "digits"
    assert "FID" in stdout and "precision" in stdout
    # Measured 0.74 / 0.89 / 0.92 / IS 8.4; bounds leave room for another torch build.
    assert 0 < real["fid"] < 3 and real["precision"] > 0.75 and real["recall"] > 0.75 and real["is"] > 7
    assert real["class_accuracy"] > 0.95 and sum(real["class_histogram"]) == 297
    g = torch.Generator().manual_seed(0)
    noise = write_npz(tmp_path / "noise.npz", torch.rand((297, 1, 8, 8), generator=g) * 2 - 1)
    fake, _ = eval_json(capsys, tmp_path, cache, noise, "digits:train", name="noise.json")
    assert fake["fid"] > 10 * real["fid"] and fake["precision"] < 0.5 and "class_accuracy" not in fake
    assert fake["kid"] > 10 * abs(real["kid"])


def test_eval_of_a_run_folder(tmp_path, capsys, cache, run_dir):
    res, stdout = eval_json(capsys, tmp_path, cache, run_dir, "digits:test", metrics="fid,pr,is",
                            extra=("--n", 70, "--steps", 2, "--sampler", "ddim"))
    assert res["n_samples"] == 70 and res["sampling"]["steps"] == 2 and res["sampling"]["sampler"] == "ddim"
    assert math.isfinite(res["fid"]) and 0 <= res["precision"] <= 1
    assert 0 <= res["class_accuracy"] <= 1 and sum(res["class_histogram"]) == 70  # the digits run is class-conditional
    assert "sampling: ddim, 2 steps" in stdout


def test_stats_file_gives_the_same_numbers_as_the_data(tmp_path, capsys, cache):
    ref = tmp_path / "ref.npz"
    code, _, err = cli(["stats", "--data", "digits:test", "--features", "digits", "--out", ref, "--cache-dir", cache,
                        "--quiet"], capsys)
    assert code == 0, err
    from_stats, _ = eval_json(capsys, tmp_path, cache, "digits:train", ref, metrics="fid,pr,kid", name="a.json")
    from_data, _ = eval_json(capsys, tmp_path, cache, "digits:train", "digits:test", metrics="fid,pr,kid", name="b.json")
    assert from_stats["fid"] == pytest.approx(from_data["fid"], rel=1e-9, abs=1e-9)
    for key in ("precision", "recall", "kid"):
        assert from_stats[key] == pytest.approx(from_data[key], rel=1e-6)
    assert from_stats["n_ref"] == 297


def test_demo_evaluation_writes_eval_json(run_dir, cache, capsys):
    from difflab.cli.demo import evaluate_demo
    from difflab.eval.metrics import MetricsConfig

    evaluate_demo(run_dir, argparse.Namespace(n=70, quiet=True, cache_dir=cache), MetricsConfig(kid_subsets=5))
    out = capsys.readouterr().out
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved["model"]["n_samples"] == 70 and saved["model"]["sampling"]["steps"] == 50
    assert saved["floor"]["fid"] < 3 and "real-vs-real floor" in out and "predicted classes" in out


# --------------------------------------------------------------------------------- bad input: one line, exit 2


def _eval_err(capsys, cache, *args):
    code, _, err = cli(["eval", "--features", "digits", "--cache-dir", cache, "--quiet", *args], capsys)
    return one_line_error(code, err)


def test_different_image_sizes(tmp_path, capsys, cache):
    big = write_npz(tmp_path / "big.npz", torch.zeros(300, 1, 16, 16))
    line = _eval_err(capsys, cache, "--samples", "digits:test", "--ref", big)
    assert "1x8x8" in line and "1x16x16" in line


def test_npz_without_arr_0(tmp_path, capsys, cache):
    path = tmp_path / "x.npz"
    np.savez(path, images=np.zeros((5, 8, 8, 1), np.uint8))
    assert "arr_0" in _eval_err(capsys, cache, "--samples", path, "--ref", "digits:test")


def test_nan_images(tmp_path, capsys, cache):
    x, _ = load_digits_split("test")
    bad = x.permute(0, 2, 3, 1).numpy().copy()
    bad[3, 2, 2, 0] = np.nan
    np.savez(tmp_path / "nan.npz", arr_0=bad)
    assert "NaN" in _eval_err(capsys, cache, "--samples", tmp_path / "nan.npz", "--ref", "digits:train")


def test_missing_input_says_what_may_be_given(capsys, cache):
    line = _eval_err(capsys, cache, "--samples", "no/such/run", "--ref", "digits:train")
    assert "run folder" in line and "digits:test" in line


def test_unknown_metric_lists_the_valid_ones(capsys, cache):
    line = _eval_err(capsys, cache, "--samples", "digits:test", "--ref", "digits:train", "--metrics", "fid,fancy")
    assert "fancy" in line and all(m in line for m in ("fid", "sfid", "is", "pr", "dc", "kid"))


def test_too_few_samples_for_fid_says_how_many(tmp_path, capsys, cache):
    x, _ = load_digits_split("test")
    few = write_npz(tmp_path / "few.npz", x[:30])
    line = _eval_err(capsys, cache, "--samples", few, "--ref", "digits:train")
    assert "65" in line and "30" in line


def test_too_few_run_samples_is_caught_before_sampling(capsys, cache, run_dir):
    line = _eval_err(capsys, cache, "--samples", run_dir, "--ref", "digits:test", "--n", 10)
    assert "65" in line and "--n" in line


def test_unknown_feature_source(capsys, cache):
    code, _, err = cli(["eval", "--samples", "digits:test", "--ref", "digits:train", "--features", "resnet"], capsys)
    line = one_line_error(code, err)
    assert "resnet" in line and "inception" in line and "digits" in line and "classifier:RUN" in line


def test_classifier_source_refuses_a_diffusion_run(capsys, cache, run_dir):
    code, _, err = cli(["eval", "--samples", "digits:test", "--ref", "digits:train", "--features", f"classifier:{run_dir}"], capsys)
    assert "not a classifier run" in one_line_error(code, err)


def test_metric_the_features_cannot_give(capsys, cache):
    line = _eval_err(capsys, cache, "--samples", "digits:test", "--ref", "digits:train", "--metrics", "sfid")
    assert "spatial" in line and "inception" in line


def test_inception_score_needs_logits(capsys):
    """Checked before the Inception network is loaded: the shipped TorchScript has no classifier head."""
    code, _, err = cli(["eval", "--samples", "digits:test", "--ref", "digits:train", "--features", "inception",
                        "--metrics", "fid,is"], capsys)
    line = one_line_error(code, err)
    assert "logits" in line and "classifier head" in line


def test_existing_out_is_refused_and_kept(tmp_path, capsys, cache):
    out = tmp_path / "r.json"
    out.write_text("keep me")
    line = _eval_err(capsys, cache, "--samples", "digits:test", "--ref", "digits:train", "--out", out)
    assert "--force" in line and out.read_text() == "keep me"


def test_stats_file_as_samples(tmp_path, capsys, cache):
    ref = tmp_path / "ref.npz"
    assert cli(["stats", "--data", "digits:test", "--features", "digits", "--out", ref, "--cache-dir", cache, "--quiet"], capsys)[0] == 0
    assert "only --ref" in _eval_err(capsys, cache, "--samples", ref, "--ref", "digits:train")


# --------------------------------------------------------------------------------- nll


def test_nll_vlb_on_a_tiny_run(tmp_path, capsys, run_dir):
    out = tmp_path / "nll.json"
    code, stdout, err = cli(["nll", "--run", run_dir, "--data", "digits:test", "--n", 2, "--batch-size", 2, "--quiet",
                             "--out", out], capsys)
    assert code == 0, err
    res = json.loads(out.read_text())
    assert math.isfinite(res["bits_per_dim"]) and res["bits_per_dim"] > 0 and math.isfinite(res["bits_per_dim_se"])
    assert res["n"] == 2 and res["T"] == 50 and len(res["vb_per_t"]) == 50 and "bits/dim" in stdout


def test_nll_unknown_method_lists_the_valid_ones(capsys, run_dir):
    # --method ode is tested in tests/test_ode_likelihood.py
    code, _, err = cli(["nll", "--run", run_dir, "--method", "bound"], capsys)
    assert "valid: vlb, ode" in one_line_error(code, err)
