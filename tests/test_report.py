"""`difflab report`: one run's page (config, curves, grids, the chain, the eval table), results found in subfolders
(sweep, compare, ablation), several runs side by side, one-line errors, and the demo's page checked in a real browser."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import cli, one_line_error, sets, tiny_overrides
from difflab.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_VAE = ["model.base_channels=8", "model.latent_dim=4", "eval.repeats=1", "train.steps=2", "train.batch_size=16", "train.log_every=1",
            "train.checkpoint_every=2", "sample.grid_size=4"]
CURVES_ALT = "loss, gradient norm and learning rate against the training step"
IMG = re.compile(r'<img class="([a-z]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)"')


def images(page: str) -> dict[str, bytes]:
    """{alt text: PNG bytes} of every inline image of the page."""
    return {alt: base64.b64decode(data) for _, data, alt in IMG.findall(page)}


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"))


def report(args, capsys) -> tuple[str, str]:
    """Run `difflab report ARGS`; (the page's text, stdout)."""
    code, out, err = cli(["report", *args], capsys)
    assert code == 0, err
    path = Path(re.search(r"^report: (.+)$", out, re.M).group(1))
    return path.read_text(), out


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache):
    """A tiny class-conditional diffusion run (grids at steps 2 and 4, label dropout for cfg) with an eval.json."""
    from difflab.runs import resolve_config, train_run

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train_run(resolve_config("digits", tiny_overrides(steps=4) + ["train.sample_every=2", "train.label_dropout=0.2"]), out, progress=False)
    assert main(["eval", "--samples", str(out), "--ref", "digits:test", "--features", "digits", "--metrics", "fid,pr", "--n", "80",
                 "--steps", "2", "--cache-dir", str(cache), "--device", "cpu", "--quiet", "--out", str(out / "eval.json")]) == 0
    return out


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    from difflab.runs import resolve_config, train_run

    out = tmp_path_factory.mktemp("runs") / "tiny-vae"
    train_run(resolve_config("digits-vae", TINY_VAE), out, progress=False)
    return out


@pytest.fixture(scope="module")
def page(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "page"
    assert main(["report", str(run), "--out", str(out), "--device", "cpu"]) == 0
    return (out / "index.html").read_text()


def test_one_run_page(run, page):
    # The resolved config: its values, section by section.
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["model_channels"] == 16 and cfg["process"]["T"] == 50
    for key, value in (("model_channels", "16"), ("num_classes", "10"), ("T", "50"), ("sample_every", "2"), ("schedule", "linear")):
        assert re.search(rf"<th>{key}</th><td[^>]*>{value}</td>", page), key
    imgs = images(page)
    # The curves, and the grids of samples/ exactly as training wrote them.
    assert Image.open(io.BytesIO(imgs[CURVES_ALT])).size[0] > 0
    for step in (2, 4):
        assert imgs[f"step {step}"] == (run / "samples" / f"step-{step}.png").read_bytes()
    # The eval table: the FID of eval.json as `difflab eval` prints it, its exact value in the tooltip.
    fid = json.loads((run / "eval.json").read_text())["fid"]
    assert re.search(rf'<td title="{re.escape(repr(fid))}" data-num="">{fid:.4f}</td>', page)
    assert "eval.json" in page and "digits:test (297)" in page and "ddim, 2 steps, NFE 2" in page
    assert "FID vs NFE needs FIDs at two or more NFEs" in page  # one NFE only: no plot, and it says why
    assert "<script" not in page and "http://" not in page and "https://" not in page  # self-contained, static


def test_the_chain_is_the_sampler_s_chain(run, page):
    """Rows x_t / x0-hat of 4 samples at 8 DDIM steps; the last x0-hat is what `difflab sample` draws from the same seed."""
    from difflab.data import to_uint8_nhwc
    from difflab.pipelines.sample import SampleRequest, generate

    alt = next(a for a in images(page) if a.startswith("x_t and the predicted x0-hat of 4 samples"))
    grid = pixels(images(page)[alt])
    cell = 8 * 4 + 2  # 8x8 digits enlarged 4x, 2 pixels of padding
    assert grid.shape == (8 * cell + 2, 8 * cell + 2)
    assert "t=49" in page and "t=0" in page and "#1 (class 0) x_t" in page and "#4 x0-hat" in page
    res = generate(SampleRequest(run=run, sampler="ddim", steps=50, spacing="leading", n=4, seed=0, device="cpu"))
    want = to_uint8_nhwc(res.images)[..., 0]
    for j in range(4):
        top, left = 2 + (2 * j + 1) * cell, 2 + 7 * cell
        got = grid[top:top + 32:4, left:left + 32:4]
        assert np.abs(got.astype(int) - want[j].astype(int)).max() <= 1, j
    noise = grid[2:34, 2:34].astype(float)  # x_T of sample 1: grey levels everywhere, not a binary-looking digit
    assert 0 < (noise % 255 != 0).mean()


def test_results_in_subfolders(run, vae, cache, tmp_path, capsys):
    """A real guidance sweep and comparison, and an ablation report, written into subfolders of the run: tables and plots."""
    from difflab.experiments.ablation import write_ablation

    r = tmp_path / "tiny"
    shutil.copytree(run, r)
    base = ["--features", "digits", "--cache-dir", cache, "--quiet"]
    code, _, err = cli(["sweep", "guidance", "--run", r, "--guidance", "cfg", "--scales", "0,1,3", "--per-class", 7, "--steps", 2,
                        "--device", "cpu", "--out", r / "reports" / "sweep", *base], capsys)
    assert code == 0, err
    code, _, err = cli(["compare", "--runs", r, vae, "--n", 70, "--trilemma-steps", "2,3", "--out", r / "reports" / "compare", *base], capsys)
    assert code == 0, err
    rows = [{"cell": "eps-simple", "objective": "eps prediction: L_simple", "paper_is": "9.46 ± 0.11", "stable": True, "fid": 17.5,
             "precision": 0.25, "recall": 0.3, "nll_bpd": 8.6, "final_loss": 0.97, "paper_fid": 3.17},
            {"cell": "mu-L-learned", "objective": "mu prediction: L, learned Sigma", "paper_is": None, "stable": False,
             "unstable_reason": "samples NaN/Inf", "paper_fid": 23.69}]
    (r / "reports" / "ablation").mkdir(parents=True)
    write_ablation({"data": "digits", "train_steps": 3, "base": "digits", "n": 70, "sampler": "ddpm", "sample_steps": 5, "ref": "digits:test",
                    "n_ref": 297, "features": "digits", "nll_n": 2, "nll_data": "digits:test", "T": 50, "rows": rows}, r / "reports" / "ablation")
    page, _ = report([r, "--out", tmp_path / "page", "--no-chain"], capsys)
    imgs = images(page)
    sweep = json.loads((r / "reports" / "sweep" / "sweep.json").read_text())
    assert "reports/sweep/sweep.json" in page and "guidance sweep (cfg" in page
    assert f'{sweep["rows"][1]["fid"]:.4f}' in page and "real train images" in page
    assert any(a.startswith("the guidance trade-off") for a in imgs) and {"scale 0", "scale 1", "scale 3"} <= set(imgs)
    comp = json.loads((r / "reports" / "compare" / "compare.json").read_text())
    assert "trilemma points" in page and any(a.startswith("the trilemma") for a in imgs)
    for p in comp["trilemma"]:
        assert f'{p["fid"]:.4f}' in page
    # FID vs NFE: the compare's diffusion points at NFE 2, 3, 5 (and the eval at NFE 2).
    assert "FID vs NFE (network evaluations per image); dashed: the real-data floor" in imgs
    assert "eps prediction: L_simple" in page and "no (samples NaN/Inf)" in page and "17.5000" in page
    assert any(a.startswith("FID and NLL bound") for a in imgs)
    assert "no denoising chain: skipped (--no-chain)" in page


def test_two_runs_side_by_side(run, vae, tmp_path, capsys):
    page, _ = report([run, vae, "--out", tmp_path / "two", "--device", "cpu"], capsys)
    assert "difflab report: tiny, tiny-vae" in page
    assert '<h4 class="runname">tiny</h4>' in page and '<h4 class="runname">tiny-vae</h4>' in page  # columns, one per run
    assert re.search(r"<th>kind</th><td>diffusion</td><td>vae</td>", page)  # the config difference, joined
    assert re.search(r"tiny-vae: \d+ keys not in every run: [^<]*model\.latent_dim=4", page)
    imgs = images(page)
    assert CURVES_ALT in imgs  # one figure: the runs on the same axes
    assert "no denoising chain: a vae run has no denoising chain" in page
    elbo = json.loads((vae / "elbo.json").read_text())["elbo_per_dim"]
    assert f"{elbo:.4f}" in page and "VAE ELBO" in page and "tiny · eval.json" in page
    alts = [alt for _, _, alt in IMG.findall(page)]
    assert sum(a.startswith("step ") for a in alts) == 3  # the diffusion run's 2 grids and the VAE's one


# ----------------------------------------------------------------------------- bad input: one line, exit 2


def test_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    code, _, err = cli(["report", tmp_path / "notes", "--out", tmp_path / "out"], capsys)
    line = one_line_error(code, err)
    assert "is not a run folder" in line and all(w in line for w in ("config.json", "checkpoints/", "metrics.jsonl", "samples/"))
    code, _, err = cli(["report", tmp_path / "missing", "--out", tmp_path / "out"], capsys)
    assert "does not exist" in one_line_error(code, err)
    code, _, err = cli(["report", tmp_path / "notes" / "a.txt", "--out", tmp_path / "out"], capsys)
    assert "is a file, not a run folder" in one_line_error(code, err)
    assert not (tmp_path / "out").exists()


def test_an_existing_out_is_refused_without_force(run, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text("<p>the old page</p>")
    (out / "keep.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = cli(["report", run, "--out", out, "--no-chain"], capsys)
    assert "--force" in one_line_error(code, err)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # byte-identical, nothing added
    page, _ = report([run, "--out", out, "--no-chain", "--force"], capsys)
    assert "difflab report: tiny" in page and (out / "keep.txt").read_text() == "mine"  # only index.html is replaced
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "keep.txt"]  # no temp file left behind
    empty = tmp_path / "empty"
    empty.mkdir()
    report([run, "--out", empty, "--no-chain"], capsys)  # an empty folder is fine without --force


def test_out_is_a_file_and_bad_chain_steps(run, tmp_path, capsys):
    f = tmp_path / "page.html"
    f.write_text("keep")
    code, _, err = cli(["report", run, "--out", f], capsys)
    assert "is a file" in one_line_error(code, err) and f.read_text() == "keep"
    code, _, err = cli(["report", run, "--out", tmp_path / "o", "--chain-steps", 1], capsys)
    assert "--chain-steps must be between 2 and 50" in one_line_error(code, err)
    code, _, err = cli(["report", "--out", tmp_path / "o"], capsys)
    assert "required" in one_line_error(code, err)


# ----------------------------------------------------------------------------- the demo's page in a real browser


def _browser():
    """(chromium, chromedriver) paths, or skip this one test saying what is missing."""
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    missing = [name for name, p in (("chromium", chromium), ("chromedriver (Debian: chromium-driver)", driver)) if p is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the python package selenium")
    if missing:
        reason = f"no headless browser to render the report page: missing {', '.join(missing)} (`make test` installs them)"
        print(reason)
        pytest.skip(reason)
    return chromium, driver


@pytest.mark.slow
def test_demo_report_renders_in_a_browser(cache, tmp_path, capsys):
    """`difflab demo` (tiny) ends by writing the report; Chromium loads it: every image decoded, the tables there, no console error."""
    chromium, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    out = tmp_path / "demo"
    code, printed, err = cli(["demo", "--out", out, "--n", 80, "--quiet", "--cache-dir", cache,
                              *sets(tiny_overrides(steps=4) + ["process.T=1000", "train.sample_every=2"])], capsys)
    assert code == 0, err
    page = out / "report" / "index.html"
    assert f"report: {page}" in printed.splitlines()
    text = page.read_text()
    grids = sorted((out / "samples").glob("*.png"))
    assert len(grids) == 4  # step-2, step-4, final-ddim-50, final-ddpm-1000
    expected_images = 1 + len(grids) + 1  # the curves, every grid, the chain (one NFE: no FID-vs-NFE plot)
    assert text.count("<img ") == expected_images
    config_sections = 1 + sum(isinstance(v, dict) for v in json.loads((out / "config.json").read_text()).values())
    expected_tables = 1 + config_sections + 1  # overview, the config sections, the eval table (model and floor)

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(arg)
    options.binary_location = chromium
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(driver_path), options=options)  # an explicit driver: Selenium Manager fetches nothing
    try:
        browser.get(page.resolve().as_uri())
        loaded = browser.execute_script("return [...document.images].map(i => [i.complete, i.naturalWidth])")
        assert len(loaded) == expected_images and all(done and width > 0 for done, width in loaded), loaded
        assert browser.execute_script("return document.querySelectorAll('table').length") >= expected_tables
        assert browser.execute_script("return document.querySelector('h1').textContent") == "difflab report: demo"
        sections = browser.execute_script("return [...document.querySelectorAll('section h2')].map(h => h.textContent)")
        assert {"Configuration", "Training curves", "Samples over training", "Denoising chain", "Evaluation"} <= set(sections)
        severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
        assert not severe, severe
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1280, min(height + 40, 12000))
        shot = tmp_path / "report.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 0
    finally:
        browser.quit()
