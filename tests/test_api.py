"""The Python API is the CLI's twin: the same request, the same images, the same NFE, for every sampler; and the
README's API example runs as written."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import difflab
from conftest import cli, one_line_error, tiny_overrides
from difflab.data import to_uint8_nhwc
from difflab.errors import UserError
from difflab.samplers import SAMPLERS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny class-conditional run (10 classes) on digits."""
    out = tmp_path_factory.mktemp("api") / "run"
    difflab.train("digits", out, overrides=tiny_overrides(steps=2), progress=False)
    return out


def _cli_sample(args, capsys, tmp_path, name):
    out = tmp_path / f"{name}.npz"
    code, stdout, err = cli(["sample", *args, "--out", out], capsys)
    assert code == 0, err
    nfe = int(re.search(r"NFE per image: (\d+)", stdout).group(1))
    with np.load(out) as z:
        return z["arr_0"], z["arr_1"], nfe


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_api_and_cli_draw_the_same_images_with_the_same_nfe(run_dir, capsys, tmp_path, name):
    run = difflab.load_run(run_dir, device="cpu")
    steps = 2 if name == "ode-rk45" else 3
    opts = {"n_steps_each": 2} if name == "langevin" else {}
    res = run.sample(6, sampler=name, steps=steps, seed=5, batch_size=4, sampler_options=opts)
    flags = ["--run", run_dir, "--sampler", name, "--steps", steps, "--n", 6, "--seed", 5, "--batch-size", 4, "--device", "cpu"]
    flags += [a for k, v in opts.items() for a in ("--sampler-opt", f"{k}={v}")]
    images, labels, nfe = _cli_sample(flags, capsys, tmp_path, name)
    assert np.array_equal(images, to_uint8_nhwc(res.images)), name
    assert np.array_equal(labels, res.labels.numpy()) and res.labels.tolist() == [0, 1, 2, 3, 4, 5]  # labels cycle; never the null label
    assert nfe == res.nfe > 0, (name, nfe, res.nfe)
    again = run.sample(6, sampler=name, steps=steps, seed=5, batch_size=4, sampler_options=opts)
    assert torch.equal(again.images, res.images)
    if SAMPLERS[name].stochastic or name == "ode-rk45":
        return
    other = run.sample(6, sampler=name, steps=steps, seed=6, batch_size=4, sampler_options=opts)
    assert not torch.equal(other.images, res.images)  # the seed matters: the comparison above is not of constants


def test_adaptive_solver_counts_the_same_evaluations_as_a_direct_call(run_dir):
    """The NFE of ode-rk45 through the request equals the evaluations of calling it on run.denoiser (at_sigma included)."""
    from difflab.samplers import ode_rk45, plan_steps, prior_sample

    run = difflab.load_run(run_dir, device="cpu")
    den = run.denoiser
    calls = {"n": 0}

    class Counting:  # every evaluation of the network, through either entry point
        process = den.process

        def __call__(self, *a, **k):
            calls["n"] += 1
            return den(*a, **k)

        def at_sigma(self, *a, **k):
            calls["n"] += 1
            return den.at_sigma(*a, **k)

    res = run.sample(4, sampler="ode-rk45", steps=2, seed=1, batch_size=4)
    g = torch.Generator().manual_seed(1)
    x_T = prior_sample(den.process, (4, 1, 8, 8), g, dtype=torch.float32)
    x0 = ode_rk45(Counting(), x_T, plan_steps(den.process, 2, run.config.sample.spacing), y=torch.arange(4) % 10, generator=g)
    assert calls["n"] > 2 * 6  # adaptive: several RK45 steps of 6 evaluations, so at_sigma was used
    assert calls["n"] == res.nfe and torch.allclose(x0.clamp(-1, 1), res.images)


def test_sample_classes_and_bad_requests(run_dir):
    run = difflab.load_run(run_dir, device="cpu")
    assert run.kind == "diffusion" and run.num_classes == 10 and run.step == 2
    assert run.sample(3, steps=2, classes=7).labels.tolist() == [7, 7, 7]
    assert run.sample(3, steps=2, classes=[1, 2, 9]).labels.tolist() == [1, 2, 9]
    with pytest.raises(UserError, match="must be in 0..9; got 10"):
        run.sample(2, steps=2, classes=[1, 10])
    with pytest.raises(UserError, match="one label or one per image"):
        run.sample(3, steps=2, classes=[1, 2])
    with pytest.raises(UserError, match="sampler 'ddim' has no option 'order'"):
        run.sample(2, sampler="ddim", steps=2, sampler_options={"order": 2})
    with pytest.raises(UserError, match="unknown sampler 'dim'"):
        run.sample(2, sampler="dim")


def test_cli_refuses_unknown_sampler_option_in_one_line(run_dir, capsys, tmp_path):
    code, _, err = cli(["sample", "--run", run_dir, "--sampler", "ddim", "--sampler-opt", "order=3", "--out", tmp_path / "x.png"], capsys)
    assert "has no option 'order'; its options: eta" in one_line_error(code, err)
    code, _, err = cli(["sample", "--run", run_dir, "--sampler-opt", "eta", "--out", tmp_path / "x.png"], capsys)
    assert "--sampler-opt expects KEY=VALUE" in one_line_error(code, err)
    assert not (tmp_path / "x.png").exists()


def test_the_readme_api_example_runs(run_dir, tmp_path, monkeypatch):
    """Every ```python block under the README's 'Python API' heading, executed against a run at runs/demo."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):]
    section = section[: section.index("\n## ", 4)] if "\n## " in section[4:] else section
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "the README has no Python API example"
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "demo").symlink_to(run_dir)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), scope)
    assert scope["result"].images.shape == (16, 1, 8, 8) and scope["result"].labels.tolist() == [3] * 16
    assert scope["x0"].shape == (16, 1, 8, 8) and scope["fast"].nfe == 10


def test_train_and_evaluate_are_the_commands(run_dir, tmp_path, capsys):
    """difflab.evaluate gives what `difflab eval` writes, for a run sampled the same way."""
    import json

    cache = tmp_path / "cache"
    res = difflab.evaluate(run_dir, "digits:test", features="digits", metrics="fid", n=80, seed=0, steps=2, cache_dir=cache, device="cpu")
    out = tmp_path / "e.json"
    code, _, err = cli(["eval", "--samples", run_dir, "--ref", "digits:test", "--features", "digits", "--metrics", "fid", "--n", 80,
                        "--steps", 2, "--cache-dir", cache, "--device", "cpu", "--out", out], capsys)
    assert code == 0, err
    assert json.loads(out.read_text())["fid"] == pytest.approx(res["fid"], rel=1e-9) and res["sampling"]["nfe"] == 2
