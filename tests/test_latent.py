"""Latent diffusion end to end on the CPU (Rombach et al. 2022): an autoencoder run, a diffusion run on its latents,
sampling (decoded images of the data's shape), guidance and eval unchanged; and the latent bad-input cases."""

import json
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file

from conftest import cli, one_line_error, sets, tiny_overrides

pytestmark = pytest.mark.usefixtures("one_thread")


def ae_overrides(widths: str) -> list[str]:
    return ["train.steps=3", "train.batch_size=16", "train.log_every=1", "train.checkpoint_every=3", "train.sample_every=0",
            "train.keep_last=0", "train.ema_rate=0.9", f"model.block_out_channels={widths}", "model.norm_num_groups=4",
            "sample.grid_size=4", "loss.disc_weight=0.1", "loss.disc_start=2", "loss.disc_channels=8", "loss.disc_layers=1"]


def latent_overrides(ae) -> list[str]:
    return [*tiny_overrides(steps=3), "model.attention_resolutions=[2]", f"latent.autoencoder={ae}"]


@pytest.fixture(scope="module")
def digits_ae(tmp_path_factory):
    """An f = 2 autoencoder run on the 8x8 digits (4x4x2 latents), 3 steps, the discriminator on from step 2."""
    from difflab.cli.main import main

    out = tmp_path_factory.mktemp("latent") / "ae"
    assert main(["train", "--config", "digits-ae", "--out", str(out), "--quiet", *sets(ae_overrides("[8,16]"))]) == 0
    return out


@pytest.fixture(scope="module")
def latent_run(digits_ae):
    from difflab.cli.main import main

    out = digits_ae.parent / "lat"
    assert main(["train", "--config", "digits-latent", "--out", str(out), "--quiet", *sets(latent_overrides(digits_ae))]) == 0
    return out


def snapshot(*folders):
    return {p: p.read_bytes() for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


def test_autoencoder_run_reports_and_turns_on_its_discriminator(digits_ae):
    rows = [json.loads(x) for x in (digits_ae / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[0]["loss_d"] == 0 and "g_adv" not in rows[0]  # step 0 < disc_start: reconstruction + KL only
    assert rows[2]["loss_d"] > 0 and "g_adv" in rows[2]
    rec = json.loads((digits_ae / "reconstruction.json").read_text())
    assert rec["split"] == "test" and rec["n_images"] == 297 and 0 < rec["psnr_db"] < 60 and rec["latent_shape"] == [2, 4, 4]
    assert (digits_ae / "plots" / "loss.png").is_file() and (digits_ae / "samples" / "step-3.png").is_file()


def test_latent_run_records_its_autoencoder_and_the_measured_scale(digits_ae, latent_run):
    from difflab.runs.latent import autoencoder_sha256

    lat = json.loads((latent_run / "config.json").read_text())["latent"]
    assert lat["autoencoder_sha256"] == autoencoder_sha256(digits_ae)
    (cache,) = (digits_ae / "latents").glob("*.safetensors")
    z = load_file(str(cache))["z"]
    assert z.shape == (1500, 2, 4, 4)  # the training split, encoded once
    assert lat["scale_factor"] == pytest.approx(1 / float(z.double().std()))
    assert (latent_run / "samples" / "step-3.png").is_file()


def test_latent_run_samples_decoded_images_with_guidance_and_evaluates(latent_run, tmp_path, capsys):
    code, out, err = cli(["sample", "--run", latent_run, "--steps", 3, "--n", 6, "--out", tmp_path / "s.npz"], capsys)
    assert code == 0, err
    arr = np.load(tmp_path / "s.npz")["arr_0"]
    assert arr.shape == (6, 8, 8, 1) and arr.dtype == np.uint8  # the data's shape, not the 4x4x2 latents
    code, out, err = cli(["sample", "--run", latent_run, "--steps", 3, "--n", 4, "--guidance", "cfg", "--scale", 2,
                          "--out", tmp_path / "g.npz"], capsys)
    assert code == 0 and "NFE per image: 3" in out, err
    res = tmp_path / "r.json"
    code, out, err = cli(["eval", "--samples", latent_run, "--ref", "digits:test", "--features", "digits", "--metrics", "fid",
                          "--n", 70, "--steps", 3, "--out", res, "--quiet"], capsys)
    assert code == 0, err
    assert np.isfinite(json.loads(res.read_text())["fid"])


def test_latent_digits32_preset_trains_and_samples_32x32_images(tmp_path, capsys):
    ae, lat = tmp_path / "ae", tmp_path / "lat"
    assert cli(["train", "--config", "digits32-ae", "--out", ae, "--quiet", *sets(ae_overrides("[8,16,16]"))], capsys)[0] == 0
    overrides = [*latent_overrides(ae), "model.attention_resolutions=[4]"]
    assert cli(["train", "--config", "digits32-latent", "--out", lat, "--quiet", *sets(overrides)], capsys)[0] == 0
    code, _, err = cli(["sample", "--run", lat, "--steps", 2, "--n", 3, "--out", tmp_path / "s.npz"], capsys)
    assert code == 0, err
    assert np.load(tmp_path / "s.npz")["arr_0"].shape == (3, 32, 32, 1)


def test_autoencoder_whose_latents_do_not_fit_the_backbone(digits_ae, tmp_path, capsys):
    before = snapshot(digits_ae)
    overrides = [*latent_overrides(digits_ae), "model.in_channels=4", "model.out_channels=4"]
    code, _, err = cli(["train", "--config", "digits-latent", "--out", tmp_path / "x", "--quiet", *sets(overrides)], capsys)
    assert "makes 2x4x4 latents but the backbone takes 4x4x4" in one_line_error(code, err)
    assert not (tmp_path / "x").exists() and snapshot(digits_ae) == before


def test_missing_autoencoder_run(tmp_path, capsys):
    code, _, err = cli(["train", "--config", "digits-latent", "--out", tmp_path / "x", "--quiet",
                        *sets(latent_overrides(tmp_path / "gone"))], capsys)
    assert "is missing" in one_line_error(code, err) and str(tmp_path / "gone") in err
    assert not (tmp_path / "x").exists()


def test_changed_autoencoder_run_is_refused(digits_ae, latent_run, tmp_path, capsys):
    config = digits_ae / "config.json"
    original = config.read_bytes()
    try:
        config.write_bytes(original + b"\n")  # any byte of its config or newest checkpoint
        before = snapshot(digits_ae, latent_run)
        code, _, err = cli(["sample", "--run", latent_run, "--steps", 2, "--n", 2, "--out", tmp_path / "s.png"], capsys)
        assert "changed since this latent run was trained on it" in one_line_error(code, err)
        code, _, err = cli(["train", "--out", latent_run, "--resume", "--quiet", "--set", "train.steps=4"], capsys)
        assert "changed since" in one_line_error(code, err)
        assert snapshot(digits_ae, latent_run) == before and not (tmp_path / "s.png").exists()
    finally:
        config.write_bytes(original)


def test_missing_autoencoder_of_a_trained_latent_run(digits_ae, latent_run, tmp_path, capsys):
    moved = tmp_path / "elsewhere"
    shutil.move(str(digits_ae), moved)
    try:
        code, _, err = cli(["sample", "--run", latent_run, "--steps", 2, "--n", 2, "--out", tmp_path / "s.png"], capsys)
        assert "is missing" in one_line_error(code, err)
    finally:
        shutil.move(str(moved), digits_ae)


@pytest.mark.parametrize("command", [["inpaint"], ["img2img", "--strength", 0.5]])
def test_pixel_restoration_refuses_a_latent_run(latent_run, tmp_path, capsys, command):
    code, _, err = cli([*command, "--run", latent_run, "--data", "digits:test", "--n", 2, "--out", tmp_path / "o.png"], capsys)
    assert "is a latent run" in one_line_error(code, err) and not (tmp_path / "o.png").exists()


def test_latent_dit_on_the_same_autoencoder(digits_ae, tmp_path, capsys):
    """Any backbone: the DiT kind shares the diffusion kind's latent section, data preparation and decoding."""
    out = tmp_path / "dit"
    overrides = ["train.steps=2", "train.batch_size=16", "train.log_every=1", "train.sample_every=0", "train.checkpoint_every=2",
                 "model.image_size=4", "model.in_channels=2", "model.out_channels=2", "model.patch_size=2", "model.hidden_size=32",
                 "model.depth=1", "model.num_heads=2", "process.T=50", "sample.steps=3", "sample.grid_size=4",
                 "denoiser.clip_x0=false", f"latent.autoencoder={digits_ae}"]
    code, _, err = cli(["train", "--config", "digits-dit", "--out", out, "--quiet", *sets(overrides)], capsys)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["latent"]["scale_factor"] > 0
    code, _, err = cli(["sample", "--run", out, "--steps", 2, "--n", 3, "--out", tmp_path / "s.npz"], capsys)
    assert code == 0, err
    assert np.load(tmp_path / "s.npz")["arr_0"].shape == (3, 8, 8, 1)


def test_autoencoder_resume_keeps_the_discriminator_schedule(digits_ae, tmp_path):
    """Paused after step 2 and resumed, the run ends with the weights of the uninterrupted one: the task's step count
    (which switches the adversarial terms on at disc_start = 2) is restored from the checkpoint."""
    from difflab.runs import resolve_config, train_run
    from difflab.training.checkpoint import list_checkpoints

    cfg = resolve_config("digits-ae", ae_overrides("[8,16]"))
    train_run(cfg, tmp_path / "ae", progress=False, stop_at=2)
    train_run(cfg, tmp_path / "ae", progress=False, resume=True)
    a = load_file(str(list_checkpoints(tmp_path / "ae" / "checkpoints")[-1].with_suffix(".safetensors")))
    b = load_file(str(list_checkpoints(digits_ae / "checkpoints")[-1].with_suffix(".safetensors")))
    model_keys = [k for k in b if k.startswith("model.")]
    assert model_keys and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in model_keys)


def test_compare_scores_a_latent_run_unchanged(latent_run, tmp_path, capsys):
    code, _, err = cli(["compare", "--runs", latent_run, "--features", "digits", "--n", 70, "--steps", 2, "--trilemma-steps", 2,
                        "--out", tmp_path / "cmp", "--quiet"], capsys)
    assert code == 0, err
    (row,) = json.loads((tmp_path / "cmp" / "compare.json").read_text())["table"]
    assert row["kind"] == "diffusion" and np.isfinite(row["fid"])
