"""The noise-aware classifier (ADM's encoder + attention pool), its training run and loading, and the guidance CLI:
`difflab classifier train`, `difflab sample --guidance ...`, `difflab sweep guidance`, and their one-line errors."""

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch

from conftest import cli, one_line_error, sets, tiny_overrides
from difflab.cli.main import main
from difflab.errors import UserError
from difflab.nets.classifier import CLASSIFIER_PRESETS, AttentionPool2d, ClassifierConfig, build_classifier, classifier_preset
from difflab.process import ProcessConfig, build_process

CLF_SETS = ["train.steps=150", "train.batch_size=32", "train.log_every=10", "train.checkpoint_every=75", "train.keep_last=0",
            "train.lr=3e-3", "train.warmup_steps=0", "train.ema_rate=0", "model.model_channels=8", "model.channel_mult=[1,2]",
            "model.attention_resolutions=[4]", "model.num_head_channels=8", "model.norm_groups=4", "process.T=50",
            "eval.timesteps=3", "eval.repeats=2"]


def _quiet_main(args) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in args])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny classifier (via the CLI) and tiny diffusion runs on the same process (T=50): with label dropout ('cond'),
    without ('nodrop'), unconditional ('uncond'); 'other' has T=40."""
    root = tmp_path_factory.mktemp("guided")
    code, out = _quiet_main(["classifier", "train", "--data", "digits:train", "--out", root / "clf", "--quiet", *sets(CLF_SETS)])
    assert code == 0
    paths = {"clf": root / "clf", "clf_stdout": out}
    for name, config, extra in [("cond", "digits-cond", []), ("nodrop", "digits", []),
                                ("uncond", "digits", ["model.class_dropout_null=false", "model.num_classes=null"]),
                                ("other", "digits", ["process.T=40"])]:
        assert main(["train", "--config", config, "--out", str(root / name), "--quiet", *sets(tiny_overrides(steps=2) + extra)]) == 0
        paths[name] = root / name
    return paths


# ----- the network ----------------------------------------------------------------------------------------------------

def test_presets_build_and_config_errors():
    for name in CLASSIFIER_PRESETS:
        with torch.device("meta"):
            net = build_classifier(name)
        assert net.out[-1].c_proj.out_channels == CLASSIFIER_PRESETS[name].num_classes
    net = build_classifier("digits-clf")
    assert net(torch.randn(3, 1, 8, 8), torch.tensor([0, 5, 999])).shape == (3, 10)
    with pytest.raises(ValueError, match="takes no labels"):
        net(torch.randn(1, 1, 8, 8), torch.tensor([0]), torch.tensor([1]))
    base = classifier_preset("digits-clf")
    with pytest.raises(UserError, match="'attention' or 'adaptive'"):
        ClassifierConfig(**{**base.__dict__, "pool": "max"})
    with pytest.raises(UserError, match="num_head_channels"):
        ClassifierConfig(**{**base.__dict__, "num_head_channels": 24})
    with pytest.raises(UserError, match="unknown classifier preset"):
        classifier_preset("nope")
    adaptive = build_classifier(ClassifierConfig(**{**base.__dict__, "pool": "adaptive"}))
    assert adaptive(torch.randn(2, 1, 8, 8), torch.tensor([1, 2])).shape == (2, 10)


def test_attention_pool_is_the_mean_token_attending_over_the_map():
    torch.manual_seed(0)
    pool = AttentionPool2d(spatial_dim=2, embed_dim=8, num_head_channels=4, output_dim=3)
    x = torch.randn(2, 8, 2, 2)
    tokens = torch.cat([x.flatten(2).mean(-1, keepdim=True), x.flatten(2)], -1) + pool.positional_embedding  # (B, C, 5)
    q, k, v = pool.qkv_proj(tokens).chunk(3, dim=1)  # (B, C, 5) each; heads of 4 channels
    heads = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        w = torch.softmax(q[:, sl, :1].transpose(1, 2) @ k[:, sl] / math.sqrt(4), -1)  # (B, 1, 5): the mean token's query
        heads.append((w @ v[:, sl].transpose(1, 2)).transpose(1, 2))  # (B, 4, 1)
    expected = pool.c_proj(torch.cat(heads, 1))[:, :, 0]
    assert torch.allclose(pool(x), expected, atol=1e-5)


def test_classifier_task_draws_and_cross_entropy():
    from difflab.runs.classifier import ClassifierTask
    from difflab.training.trainer import step_generator

    p = build_process(ProcessConfig(T=50))
    task = ClassifierTask(p)
    d1, d2 = task.draw(step_generator(0, 3), 16, (1, 8, 8)), task.draw(step_generator(0, 3), 16, (1, 8, 8))
    assert torch.equal(d1["t"], d2["t"]) and torch.equal(d1["eps"], d2["eps"]) and int(d1["t"].max()) < 50
    net = build_classifier(ClassifierConfig(**{**classifier_preset("digits-clf").__dict__, "model_channels": 8,
                                               "num_head_channels": 8, "norm_groups": 4}))
    x, y = torch.rand(16, 1, 8, 8) * 2 - 1, torch.arange(16) % 10
    loss, _ = task.loss(net, x, y, d1)
    x_t = p.q_sample(x, d1["t"], d1["eps"])
    expected = torch.nn.functional.cross_entropy(net(x_t, p.model_time(d1["t"])), y, reduction="none")
    assert torch.allclose(loss, expected, atol=1e-6)


# ----- training, the report, loading --------------------------------------------------------------------------------

def test_classifier_run_reports_accuracy_vs_t_above_chance(runs):
    clf = runs["clf"]
    for f in ("config.json", "metrics.jsonl", "accuracy_vs_t.json", "plots/accuracy_vs_t.png", "plots/loss.png",
              "checkpoints/step-150.safetensors", "checkpoints/step-150.json"):
        assert (clf / f).exists(), f
    rep = json.loads((clf / "accuracy_vs_t.json").read_text())
    assert rep["held_out"] is True and rep["split"] == "test" and rep["n_images"] == 297 and rep["chance"] == 0.1
    acc = {r["t"]: r["accuracy"] for r in rep["rows"]}
    assert sorted(acc) == [0, 24, 49]
    assert acc[0] > 0.2, acc  # small t: well above chance (0.1) after 150 tiny steps
    assert acc[0] > acc[49], acc  # and the task gets harder with noise
    assert "accuracy vs t on test" in runs["clf_stdout"] and "mean accuracy over t" in runs["clf_stdout"]


def test_load_classifier(runs):
    from safetensors.torch import load_file

    from difflab.runs import load_run

    lc = load_run(runs["clf"], kind="classifier")
    assert lc.step == 150 and lc.classifier.num_classes == 10 and lc.cfg.process.T == 50
    ema = {k[4:]: v for k, v in load_file(str(runs["clf"] / "checkpoints" / "step-150.safetensors")).items() if k.startswith("ema.")}
    assert all(torch.equal(lc.model.state_dict()[k], v) for k, v in ema.items())
    x = torch.zeros(2, 1, 8, 8)
    assert lc.classifier(x, torch.tensor([0, 3])).shape == (2, 10)
    with pytest.raises(UserError, match="is a diffusion run, not a classifier run"):
        load_run(runs["cond"], kind="classifier")


def test_classifier_config_errors():
    from difflab.runs import resolve_config

    with pytest.raises(UserError, match="label_dropout is for diffusion models"):
        resolve_config("digits-clf", ["train.label_dropout=0.1"])
    with pytest.raises(UserError, match="unknown config key"):
        resolve_config("digits-clf", ["train.nope=1"])
    with pytest.raises(UserError, match="unknown config 'no-such-preset'"):
        resolve_config("no-such-preset", kinds=("classifier",))
    with pytest.raises(UserError, match="is a diffusion config; this command takes classifier configs"):
        resolve_config("digits", kinds=("classifier",))


# ----- difflab sample --guidance ------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [
    ["--guidance", "classifier", "--scale", "3", "--class", "3"],
    ["--guidance", "classifier", "--base", "uncond", "--class", "3", "--sampler", "ddpm"],
    ["--guidance", "cfg", "--scale", "2", "--class", "3"],
])
def test_guided_sampling_from_the_cli(runs, tmp_path, capsys, extra):
    out = tmp_path / "s.npz"
    args = ["sample", "--run", runs["cond"], "--n", 6, "--steps", 4, "--out", out, *extra]
    if "classifier" in extra:
        args += ["--classifier", runs["clf"]]
    code, stdout, err = cli(args, capsys)
    assert code == 0, err
    with np.load(out) as z:
        assert z["arr_0"].shape == (6, 8, 8, 1) and (z["arr_1"] == 3).all()
    assert f"guidance: {extra[1]}" in stdout


def test_classifier_guidance_of_an_unconditional_model(runs, tmp_path, capsys):
    out = tmp_path / "u.npz"
    code, stdout, err = cli(["sample", "--run", runs["uncond"], "--guidance", "classifier", "--classifier", runs["clf"],
                             "--n", 10, "--steps", 3, "--out", out], capsys)
    assert code == 0, err
    with np.load(out) as z:
        assert list(z["arr_1"]) == list(range(10))  # labels cycle through the classifier's classes


@pytest.mark.parametrize("args,match", [
    (["--guidance", "classifier"], "--guidance classifier needs --classifier"),
    (["--scale", "2"], "--scale needs --guidance"),
    (["--guidance", "cfg", "--classifier", "CLF"], "--classifier is only used with --guidance classifier"),
    (["--guidance", "cfg", "--scale", "-1"], "--scale must be a finite number >= 0"),
    (["--guidance", "classifier", "--classifier", "CLF", "--class", "10"], "--class must be in 0..9"),
])
def test_guidance_flag_errors(runs, tmp_path, capsys, args, match):
    args = [runs["clf"] if a == "CLF" else a for a in args]
    code, _, err = cli(["sample", "--run", runs["cond"], "--n", 2, "--steps", 2, "--out", tmp_path / "x.png", *args], capsys)
    assert match in one_line_error(code, err)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("run,args,match", [
    ("nodrop", ["--guidance", "cfg"], "needs a model trained with a null class"),
    ("uncond", ["--guidance", "cfg"], "needs a class-conditional model"),
    ("nodrop", ["--guidance", "classifier", "--classifier", "CLF", "--base", "uncond"], "needs a trained null class"),
    ("uncond", ["--guidance", "classifier", "--classifier", "CLF", "--base", "cond"], "--base cond needs a class-conditional model"),
    ("other", ["--guidance", "classifier", "--classifier", "CLF"], "T=50"),
    ("cond", ["--guidance", "classifier", "--classifier", "COND"], "not a classifier run"),
])
def test_guidance_model_errors(runs, tmp_path, capsys, run, args, match):
    args = [runs["clf"] if a == "CLF" else runs["cond"] if a == "COND" else a for a in args]
    code, _, err = cli(["sample", "--run", runs[run], "--n", 2, "--steps", 2, "--out", tmp_path / "x.png", *args], capsys)
    assert match in one_line_error(code, err)


def test_guidance_on_a_sampler_that_cannot_take_it(runs, tmp_path, capsys, monkeypatch):
    from difflab.samplers import SAMPLERS, SamplerSpec, ddim

    monkeypatch.setitem(SAMPLERS, "undeclared", SamplerSpec("undeclared", ddim, 1, False, "a sampler guidance was never checked with"))
    code, _, err = cli(["sample", "--run", runs["cond"], "--sampler", "undeclared", "--guidance", "cfg", "--n", 2, "--steps", 2,
                        "--out", tmp_path / "x.png"], capsys)
    assert "sampler 'undeclared' cannot take cfg guidance" in one_line_error(code, err)
    # without guidance the same sampler is fine
    code, _, err = cli(["sample", "--run", runs["cond"], "--sampler", "undeclared", "--n", 2, "--steps", 2, "--out", tmp_path / "x.png"], capsys)
    assert code == 0, err


# ----- difflab sweep guidance ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from difflab.eval.digits_features import load_or_train_digits_classifier

    folder = tmp_path_factory.mktemp("cache")
    load_or_train_digits_classifier(folder)
    return folder


@pytest.mark.slow
def test_sweep_writes_table_plot_and_grids(runs, cache, tmp_path, capsys):
    out = tmp_path / "report"
    code, stdout, err = cli(["sweep", "guidance", "--run", runs["cond"], "--classifier", runs["clf"], "--scales", "0,2", "--per-class", 7,
                             "--steps", 3, "--out", out, "--cache-dir", cache, "--quiet"], capsys)
    assert code == 0, err
    rep = json.loads((out / "sweep.json").read_text())
    assert [r["scale"] for r in rep["rows"]] == [0.0, 2.0] and rep["base"] == "cond"
    for r in rep["rows"]:
        assert r["n"] == 70 and {"fid", "precision", "recall", "accuracy"} <= set(r)
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["precision"] <= 1 and r["fid"] > 0
    assert rep["train_images"]["n"] == 1500 and rep["train_images"]["accuracy"] > 0.9
    assert (out / "sweep.png").stat().st_size > 0 and (out / "grids" / "scale-2.png").exists()
    assert "| s | FID | precision | recall | accuracy |" in (out / "sweep.md").read_text()
    assert "real train images" in stdout
    # a second sweep into the same folder needs --force
    code, _, err = cli(["sweep", "guidance", "--run", runs["cond"], "--guidance", "cfg", "--scales", "0,1", "--per-class", 7, "--steps", 2,
                        "--out", out, "--cache-dir", cache, "--quiet"], capsys)
    assert "already holds a sweep report" in one_line_error(code, err)
    code, _, err = cli(["sweep", "guidance", "--run", runs["cond"], "--guidance", "cfg", "--scales", "0,1", "--per-class", 7, "--steps", 2,
                        "--out", out, "--cache-dir", cache, "--quiet", "--force"], capsys)
    assert code == 0, err
    assert "| w |" in (out / "sweep.md").read_text()


@pytest.mark.parametrize("args,match", [
    (["--scales", "0,a"], "--scales must be comma-separated numbers"),
    (["--scales", "1,-2"], "--scales must be distinct numbers >= 0"),
    (["--guidance", "cfg", "--scales", "0,1", "--run", "NODROP"], "needs a model trained with a null class"),
    (["--scales", "0,1"], "--guidance classifier needs --classifier"),
])
def test_sweep_errors(runs, tmp_path, capsys, args, match):
    run = runs["nodrop"] if "NODROP" in args else runs["cond"]
    args = [a for a in args if a not in ("--run", "NODROP")]
    code, _, err = cli(["sweep", "guidance", "--run", run, "--per-class", 2, "--out", tmp_path / "rep", "--cache-dir", tmp_path, *args], capsys)
    assert match in one_line_error(code, err)


def test_classifier_run_as_a_feature_source(runs, tmp_path, capsys):
    """`--features classifier:RUN`: the run's classifier at t = 0 gives pool features and logits for eval."""
    from difflab.data import load_digits_split
    from difflab.pipelines.evaluate import build_extractor

    ext = build_extractor(f"classifier:{runs['clf']}")
    x, y = load_digits_split("test")
    feats = ext.extract(x[:50])
    assert feats["pool"].shape == (50, ext.dims["pool"]) and feats["logits"].shape == (50, 10)
    acc = (feats["logits"].argmax(1) == y[:50].numpy()).mean()
    assert acc > 0.2  # a tiny classifier, but well above chance on clean digits
    code, out, err = cli(["eval", "--samples", "digits:test", "--ref", "digits:train", "--features", f"classifier:{runs['clf']}",
                          "--metrics", "fid,pr,is", "--out", tmp_path / "r.json"], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "r.json").read_text())
    assert np.isfinite(res["fid"]) and 0 <= res["precision"] <= 1
    with pytest.raises(UserError, match="takes 1x8x8"):
        ext.extract(torch.zeros(2, 3, 8, 8))


def test_classifier_resume_refuses_a_changed_model_and_continues_a_longer_run(runs, tmp_path, capsys):
    """--resume of a classifier run: a different model section is a one-line error; more train.steps continue it."""
    import shutil

    from conftest import cli, one_line_error

    run = tmp_path / "clf"
    shutil.copytree(runs["clf"], run)
    code, _, err = cli(["classifier", "train", "--data", "digits:train", "--out", run, "--resume", "--quiet",
                        *sets(CLF_SETS + ["model.model_channels=16"])], capsys)
    assert "'model' section differs" in one_line_error(code, err)
    steps = int(next(s for s in CLF_SETS if s.startswith("train.steps=")).split("=")[1])
    code, _, err = cli(["classifier", "train", "--data", "digits:train", "--out", run, "--resume", "--quiet",
                        *sets(CLF_SETS + [f"train.steps={steps + 1}"])], capsys)
    assert code == 0, err
    assert (run / "checkpoints" / f"step-{steps + 1}.safetensors").exists()
