"""`difflab import dit`: a state dict with facebookresearch/DiT's names becomes a run folder that samples as DiT does;
a file of another DiT size says which size it looks like; a file with pickled code is refused unrun; --force keeps
the old run until the new one is written."""

import json

import numpy as np
import pytest
import torch

from conftest import cli, one_line_error
from difflab.interop.dit import looks_like, matching_dit_presets
from difflab.nets import DIT_PRESETS, DiT
from difflab.runs import load_run, resolve_config

pytestmark = pytest.mark.usefixtures("one_thread")

# A small DiT on 8x8 one-channel images (so samples are PNG-able), described as --set items over the dit-s-2 preset.
SETS = ["model.depth=2", "model.hidden_size=32", "model.num_heads=4", "model.image_size=8", "model.in_channels=1",
        "model.out_channels=1", "model.num_classes=10"]


def _args(items):
    return [a for s in items for a in ("--set", s)]


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A checkpoint as DiT's code saves one: torch.save(model.state_dict()) with its module names, random weights."""
    folder = tmp_path_factory.mktemp("dit")
    cfg = resolve_config("digits-dit", SETS).model
    torch.manual_seed(0)
    net = DiT(cfg).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name != "pos_embed":
                p.normal_(0, 0.1)
    torch.save(net.state_dict(), folder / "mydit.pt")
    return folder / "mydit.pt", net


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_import_writes_a_run_that_samples_with_dits_schedule(released, tmp_path, capsys):
    pt, net = released
    out = tmp_path / "run"
    code, stdout, err = cli(["import", "dit", "--checkpoint", pt, "--preset", "dit-s-2", "--out", out, *_args(SETS)], capsys)
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["kind"] == "dit"
    assert cfg["process"] == {**cfg["process"], "kind": "vp", "schedule": "linear", "T": 1000, "beta_start": 1e-4, "beta_end": 0.02}
    assert cfg["denoiser"] == {"parameterization": "eps", "var_type": "learned_range", "clip_x0": False}
    run = load_run(out)
    assert run.kind == "dit" and run.denoiser.process.T == 1000
    betas = run.denoiser.process.betas
    assert float(betas[0]) == pytest.approx(1e-4) and float(betas[-1]) == pytest.approx(0.02)
    x, t, y = torch.randn(3, 1, 8, 8), torch.tensor([0, 400, 999]), torch.tensor([1, 2, 10])
    with torch.no_grad():
        assert torch.equal(run.model(x, t, y), net(x, t, y))  # the very weights, EMA copy included
    assert torch.equal(load_run(out, ema=False).model.final_layer.linear.weight, net.final_layer.linear.weight)
    for extra in (["--sampler", "ddim"], ["--guidance", "cfg", "--scale", "2", "--class", "3"]):
        code, _, err = cli(["sample", "--run", out, "--steps", "3", "--n", "4", "--out", tmp_path / "s.png", "--force", *extra], capsys)
        assert code == 0, err


def test_the_shapes_tell_which_released_size_a_file_is():
    def meta_state(name):
        with torch.device("meta"):
            return DiT(DIT_PRESETS[name]).state_dict()

    assert matching_dit_presets(meta_state("dit-b-4")) == ["dit-b-4"]
    assert looks_like(meta_state("dit-s-2")).startswith("dit-s-2")
    assert matching_dit_presets(meta_state("dit-xl-2-512")) == ["dit-xl-2-512"]


def test_a_checkpoint_of_another_size_says_which_it_looks_like(released, tmp_path, capsys):
    pt, _ = released
    renamed = tmp_path / "DiT-XL-2-256x256.pt"  # the release's name on a small model's weights
    renamed.write_bytes(pt.read_bytes())
    code, _, err = cli(["import", "dit", "--checkpoint", renamed, "--out", tmp_path / "r"], capsys)
    msg = one_line_error(code, err)
    assert "is not a dit-xl-2 checkpoint: it looks like a DiT of depth 2, hidden_size 32, patch_size 2 on 1x8x8 inputs" in msg
    assert not (tmp_path / "r").exists()


class _Evil:
    """Unpickling this calls open(marker, 'w'): code run by the loader, the reason never to unpickle a given file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_file_with_pickled_code_is_refused_and_never_run(released, tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "DiT-XL-2-256x256.pt"
    torch.save({"x_embedder.proj.weight": _Evil(marker)}, evil)
    code, _, err = cli(["import", "dit", "--checkpoint", evil, "--out", tmp_path / "r"], capsys)
    assert "loads with weights_only=True" in one_line_error(code, err)
    assert not marker.exists() and not (tmp_path / "r").exists()
    torch.load(evil, weights_only=False)  # the control: a loader that unpickles code does run it
    assert marker.exists()


def test_force_validates_first_then_replaces(released, tmp_path, capsys):
    pt, _ = released
    out = tmp_path / "run"
    base = ["import", "dit", "--preset", "dit-s-2", "--out", out, *_args(SETS)]
    assert cli([*base, "--checkpoint", pt], capsys)[0] == 0
    before = _snapshot(out)
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    code, _, err = cli([*base, "--checkpoint", bad, "--force"], capsys)
    assert "weights_only=True" in one_line_error(code, err)
    assert _snapshot(out) == before and not (out / ".replaced").exists()  # refused before anything moved
    code, _, err = cli([*base, "--checkpoint", pt], capsys)
    assert "already holds a run" in one_line_error(code, err)
    code, _, err = cli([*base, "--checkpoint", pt, "--force"], capsys)
    assert code == 0, err
    assert not (out / ".replaced").exists() and (out / "checkpoints" / "step-0.safetensors").exists()


def test_with_an_autoencoder_the_imported_dit_samples_decoded_images(tmp_path, capsys):
    """DiT's full pipeline: latents of an autoencoder run (here a tiny f = 2 one on digits: 2x4x4 latents), decoded."""
    from difflab.cli.main import main

    ae = tmp_path / "ae"
    ae_sets = ["train.steps=2", "train.batch_size=16", "train.log_every=1", "train.checkpoint_every=2", "train.sample_every=0",
               "model.block_out_channels=[8,16]", "model.norm_num_groups=4", "sample.grid_size=4", "model.latent_channels=2"]
    assert main(["train", "--config", "digits-ae", "--out", str(ae), "--quiet", *_args(ae_sets)]) == 0
    latent_sets = ["model.depth=1", "model.hidden_size=32", "model.num_heads=4", "model.image_size=4", "model.in_channels=2",
                   "model.out_channels=2", "model.num_classes=10"]
    torch.save(DiT(resolve_config("digits-dit", latent_sets).model).state_dict(), tmp_path / "latent.pt")
    out = tmp_path / "run"
    base = ["import", "dit", "--checkpoint", tmp_path / "latent.pt", "--preset", "dit-s-2", "--autoencoder", ae]
    code, _, err = cli([*base, "--out", out, *_args(latent_sets)], capsys)
    assert code == 0, err
    latent = json.loads((out / "config.json").read_text())["latent"]
    assert latent["scale_factor"] == 0.18215 and len(latent["autoencoder_sha256"]) == 64
    code, _, err = cli(["sample", "--run", out, "--steps", 2, "--n", 3, "--out", tmp_path / "s.npz"], capsys)
    assert code == 0, err
    assert np.load(tmp_path / "s.npz")["arr_0"].shape == (3, 8, 8, 1)  # decoded digits, not latents
    code, _, err = cli([*base, "--out", tmp_path / "other", *_args([*latent_sets, "model.image_size=8"])], capsys)
    assert "makes 2x4x4 latents but the backbone takes 2x8x8" in one_line_error(code, err)


def test_latents_without_an_autoencoder_are_refused_as_images_in_one_line(tmp_path, capsys):
    """An imported latent DiT without --autoencoder makes 4-channel arrays: writing them as a PNG or .npz is a user error."""
    sets4 = [s for s in SETS if "channels" not in s] + ["model.in_channels=4", "model.out_channels=4"]
    net = DiT(resolve_config("digits-dit", sets4).model)
    torch.save(net.state_dict(), tmp_path / "latent.pt")
    out = tmp_path / "run"
    code, _, err = cli(["import", "dit", "--checkpoint", tmp_path / "latent.pt", "--preset", "dit-s-2", "--out", out, *_args(sets4)], capsys)
    assert code == 0, err
    for name in ("s.png", "s.npz"):
        code, _, err = cli(["sample", "--quiet", "--run", out, "--steps", "2", "--n", "2", "--out", tmp_path / name], capsys)
        assert "4-channel arrays, not images" in one_line_error(code, err)
        assert not (tmp_path / name).exists()
