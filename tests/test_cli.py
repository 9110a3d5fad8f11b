"""End-to-end CLI runs on tiny settings, and the one-line errors (exit 2, nothing overwritten) for bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import cli, one_line_error, sets, tiny_overrides
from difflab.cli.main import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r"
    assert main(["train", "--config", "digits", "--out", str(out), "--quiet", *sets(tiny_overrides(steps=2))]) == 0
    return out


def test_train_writes_a_run(trained):
    assert (trained / "config.json").exists()
    assert json.loads((trained / "config.json").read_text())["train"]["steps"] == 2
    rows = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert {"loss", "lr", "grad_norm", "it_per_s"} <= rows[0].keys()


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sample_png_and_npz(trained, tmp_path, capsys, sampler):
    code, out, _ = cli(["sample", "--run", trained, "--sampler", sampler, "--steps", 3, "--n", 5, "--out", tmp_path / "g.png"], capsys)
    assert code == 0 and "NFE per image: 3" in out
    assert (tmp_path / "g.png").stat().st_size > 0
    code, _, _ = cli(["sample", "--run", trained, "--sampler", sampler, "--steps", 3, "--n", 5, "--out", tmp_path / "s.npz"], capsys)
    arr = np.load(tmp_path / "s.npz")
    assert code == 0 and arr["arr_0"].shape == (5, 8, 8, 1) and arr["arr_0"].dtype == np.uint8


def test_sample_is_reproducible_by_seed(trained, tmp_path, capsys):
    for name in ("a", "b"):
        cli(["sample", "--run", trained, "--sampler", "ddpm", "--steps", 3, "--n", 4, "--seed", 7, "--out", tmp_path / f"{name}.npz"], capsys)
    assert np.array_equal(np.load(tmp_path / "a.npz")["arr_0"], np.load(tmp_path / "b.npz")["arr_0"])


def test_model_prints_parameter_count(capsys):
    code, out, _ = cli(["model", "ddpm-cifar10"], capsys)
    assert code == 0 and "parameters: 35,746,307" in out.replace("35746307", "35,746,307")


def test_config_keys_are_all_documented(capsys):
    code, out, _ = cli(["config", "digits", "--keys"], capsys)
    assert code == 0
    lines = out.splitlines()
    keys = [ln.split(" = ")[0] for ln in lines if not ln.startswith(" ")]
    docs = [ln.strip() for ln in lines if ln.startswith(" ")]
    assert {"train.steps", "train.batch_size", "train.lr", "train.seed"} <= set(keys)
    assert len(keys) == len(docs) and all(docs)
    documented = Path(__file__).parent.parent / "docs" / "config.md"
    text = documented.read_text()
    missing = [k for k in keys if f"`{k}`" not in text]
    assert not missing, f"docs/config.md lacks {missing}; regenerate it with `python -m difflab.cli.docs`"


# ----- bad input: one line, exit 2, nothing overwritten ------------------------------------------------

def test_unknown_config_key_lists_valid_ones(tmp_path, capsys):
    code, _, err = cli(["train", "--out", tmp_path / "r", "--set", "train.stepz=3"], capsys)
    line = one_line_error(code, err)
    assert "train.stepz" in line and "steps" in line and "batch_size" in line
    assert not (tmp_path / "r").exists()


def test_wrong_value_type(tmp_path, capsys):
    code, _, err = cli(["train", "--out", tmp_path / "r", "--set", "train.steps=many"], capsys)
    assert "train.steps" in one_line_error(code, err) and "integer" in err


def test_invalid_choice_lists_choices(tmp_path, capsys):
    code, _, err = cli(["train", "--out", tmp_path / "r", "--set", "denoiser.parameterization=score"], capsys)
    line = one_line_error(code, err)
    assert "'eps'" in line and "'v'" in line


def test_existing_run_is_refused_and_kept(trained, capsys):
    before = {p: p.stat().st_mtime_ns for p in trained.rglob("*") if p.is_file()}
    code, _, err = cli(["train", "--out", trained, *sets(tiny_overrides(steps=2))], capsys)
    assert "--resume" in one_line_error(code, err) and "--force" in err
    after = {p: p.stat().st_mtime_ns for p in trained.rglob("*") if p.is_file()}
    assert before == after


def test_resume_without_a_run(tmp_path, capsys):
    code, _, err = cli(["train", "--out", tmp_path / "none", "--resume"], capsys)
    assert "--resume" in (line := one_line_error(code, err)) and "holds no run (no config.json)" in line
    assert not (tmp_path / "none").exists()


def test_sample_refuses_to_overwrite(trained, tmp_path, capsys):
    target = tmp_path / "x.png"
    target.write_bytes(b"keep me")
    code, _, err = cli(["sample", "--run", trained, "--steps", 2, "--n", 2, "--out", target], capsys)
    assert "--force" in one_line_error(code, err)
    assert target.read_bytes() == b"keep me"


def test_sample_from_missing_run(tmp_path, capsys):
    code, _, err = cli(["sample", "--run", tmp_path / "nope", "--out", tmp_path / "x.png"], capsys)
    line = one_line_error(code, err)
    assert str(tmp_path / "nope") in line and "does not exist" in line and not (tmp_path / "x.png").exists()


def test_unknown_sampler(trained, tmp_path, capsys):
    code, _, err = cli(["sample", "--run", trained, "--sampler", "magic", "--out", tmp_path / "x.png"], capsys)
    assert "ddim" in one_line_error(code, err)


def test_corrupt_image_folder_via_cli(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    code, _, err = cli(["train", "--out", tmp_path / "r", "--set", f"data.name={folder}"], capsys)
    assert "bad.png" in one_line_error(code, err)


def test_model_mismatch_with_data(tmp_path, capsys):
    code, _, err = cli(["train", "--out", tmp_path / "r", "--set", "model.in_channels=3"], capsys)
    assert "model.in_channels" in one_line_error(code, err)


def test_console_script_exit_code(tmp_path):
    """Through a real process: exit status 2 and no traceback."""
    proc = subprocess.run([sys.executable, "-m", "difflab.cli.main", "train", "--out", str(tmp_path / "r"), "--set", "nope=1"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.startswith("error: ")


def test_ncsn_preset_trains_and_samples_with_langevin_and_pc(tmp_path, capsys):
    """The score view end to end: VE process, DSM objective, annealed Langevin and predictor-corrector sampling."""
    run = tmp_path / "ncsn"
    over = [s for s in tiny_overrides(steps=2) if not s.startswith(("process.", "sample."))] + ["process.T=20", "sample.steps=3"]
    assert main(["train", "--config", "digits-ncsn", "--out", str(run), "--quiet", *sets(over)]) == 0
    for sampler in ("langevin", "pc"):
        code, out, err = cli(["sample", "--run", run, "--sampler", sampler, "--steps", 3, "--spacing", "linspace", "--n", 4,
                                  "--out", tmp_path / f"{sampler}.npz"], capsys)
        assert code == 0, err
        images = np.load(tmp_path / f"{sampler}.npz")["arr_0"]
        assert images.shape == (4, 8, 8, 1) and images.std() > 0 and len({im.tobytes() for im in images}) == 4
        nfe = int(out.split("NFE per image: ")[1].split()[0])
        from difflab.samplers import count_nfe, get_sampler

        assert nfe == count_nfe(get_sampler(sampler), 3), (sampler, nfe)


def test_interpolate_seeds_and_inverted_images(trained, tmp_path, capsys):
    import difflab
    from PIL import Image

    from difflab.data import to_uint8_nhwc

    code, out, err = cli(["interpolate", "--run", trained, "--seeds", 1, 2, "--frames", 4, "--steps", 3, "--device", "cpu",
                          "--out", tmp_path / "s.png"], capsys)
    assert code == 0, err
    strip = np.asarray(Image.open(tmp_path / "s.png"))
    cell = strip.shape[0] - 4  # one row of 4 cells with 2 px padding around each
    up = cell // 8
    frames = [strip[2:2 + cell:up, 2 + k * (cell + 2):2 + k * (cell + 2) + cell:up] for k in range(4)]
    # The path's ends are the two seeds' own DDIM samples (class 0), drawn here through the API.
    run = difflab.load_run(trained, device="cpu")
    for k, seed in ((0, 1), (3, 2)):
        want = to_uint8_nhwc(run.sample(1, sampler="ddim", steps=3, seed=seed, classes=0).images)[0, :, :, 0]
        assert np.abs(frames[k].reshape(8, 8).astype(int) - want).max() <= 1, k  # batch of 4 vs 1: float rounding only
    assert not np.array_equal(frames[1], frames[0]) and not np.array_equal(frames[1], frames[3])
    code, out, err = cli(["interpolate", "--run", trained, "--data", "digits:test", "--index", 0, 3, "--frames", 3, "--steps", 3,
                              "--class", 1, "--out", tmp_path / "d.png"], capsys)
    assert code == 0, err
    code, _, err = cli(["interpolate", "--run", trained, "--seeds", 1, 2, "--frames", 1, "--out", tmp_path / "x.png"], capsys)
    assert "--frames" in one_line_error(code, err)


def test_samplers_command_lists_every_sampler(capsys):
    from difflab.samplers import SAMPLERS

    code, out, _ = cli(["samplers"], capsys)
    assert code == 0 and all(name in out for name in SAMPLERS)


def test_a_closed_pipe_is_not_a_traceback():
    """`difflab config --keys | head -1`: the reader leaving early ends the command quietly, without a Python traceback."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "difflab.cli.main", "config", "--keys"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, bufsize=0)
    first = proc.stdout.read(64)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert first and "Traceback" not in err and "BrokenPipeError" not in err, err


def test_searched_spacing_prints_steps_that_timesteps_reproduces(trained, tmp_path, capsys):
    """`--spacing searched` finds steps on the run's model and prints them; `--timesteps` with those steps gives the same
    images, so the printed schedule is the one that was used; `eval` takes both options too."""
    import numpy as np

    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    code, out, err = cli(["sample", "--run", trained, "--sampler", "unipc", "--steps", 4, "--spacing", "searched",
                          "--search-batch", 8, "--n", 6, "--out", a], capsys)
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if ln.startswith("searched timesteps"))
    steps = line.split(": ")[1].split()[0]
    ts = [int(v) for v in steps.split(",")]
    assert len(ts) == 4 and ts[0] == 49 and ts[-1] == 0 and ts == sorted(ts, reverse=True)
    code, out, err = cli(["sample", "--run", trained, "--sampler", "unipc", "--timesteps", steps, "--n", 6, "--out", b], capsys)
    assert code == 0, err
    assert np.array_equal(np.load(a)["arr_0"], np.load(b)["arr_0"])

    res = tmp_path / "r.json"
    code, out, err = cli(["eval", "--samples", trained, "--ref", "digits:test", "--features", "digits", "--metrics", "fid",
                          "--n", 70, "--sampler", "unipc", "--timesteps", steps, "--out", res, "--quiet"], capsys)
    assert code == 0, err
    assert json.loads(res.read_text())["sampling"]["timesteps"] == ts


@pytest.mark.parametrize("args,needle", [
    (["--timesteps", "5,9"], "decreasing"),
    (["--timesteps", "49,60,0"], "0..49"),
    (["--timesteps", "9,a"], "comma-separated"),
    (["--timesteps", "nope.json"], "nope.json"),
    (["--timesteps", "9,0", "--steps", "3"], "drop --steps"),
    (["--spacing", "searched", "--sampler", "ddpm"], "deterministic"),
    (["--spacing", "searched", "--sampler", "unipc", "--search-batch", "0"], "--search-batch"),
    (["--spacing", "sideways"], "unknown --spacing 'sideways'; valid: leading, trailing"),
])
def test_bad_timesteps_are_one_line_errors(trained, tmp_path, capsys, args, needle):
    out = tmp_path / "x.png"
    code, _, err = cli(["sample", "--run", trained, "--n", 2, "--out", out, *args], capsys)
    assert needle in one_line_error(code, err) and not out.exists()
