"""The KL autoencoder of latent diffusion (nets/autoencoder_kl.py): parameter counts, parity with diffusers'
AutoencoderKL (a test-only reference; random init, no download), the diffusers-vae import, and its config checks."""

import json

import pytest
import torch

from conftest import cli, one_line_error
from difflab.errors import UserError
from difflab.nets.autoencoder_kl import AUTOENCODER_PRESETS, AutoencoderKL, AutoencoderKLConfig, DiagonalGaussian

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(in_channels=3, block_out_channels=(32, 64, 64), layers_per_block=2, latent_channels=4, norm_num_groups=16)


def _diffusers_vae(**overrides):
    diffusers = pytest.importorskip("diffusers")
    kw = {**SMALL, **overrides}
    n = len(kw["block_out_channels"])
    return diffusers.AutoencoderKL(out_channels=kw["in_channels"], down_block_types=("DownEncoderBlock2D",) * n,
                                   up_block_types=("UpDecoderBlock2D",) * n, sample_size=16, **kw).eval()


def test_sd_vae_has_the_released_parameter_count():
    with torch.device("meta"):
        net = AutoencoderKL(AUTOENCODER_PRESETS["sd-vae"])
    assert sum(p.numel() for p in net.parameters()) == 83_653_863


def test_model_command_prints_the_sd_vae_count(capsys):
    code, out, _ = cli(["model", "sd-vae"], capsys)
    assert code == 0 and "parameters: 83,653,863" in out


@pytest.mark.parametrize("mid_attention", [True, False])
def test_parity_with_diffusers_autoencoder_kl(mid_attention):
    torch.manual_seed(0)
    ref = _diffusers_vae(mid_block_add_attention=mid_attention)
    ours = AutoencoderKL(AutoencoderKLConfig(image_size=16, mid_attention=mid_attention, **SMALL)).eval()
    ours.load_state_dict(ref.state_dict())  # strict: the module names are diffusers'
    x, z = torch.randn(2, 3, 16, 16), torch.randn(2, 4, 4, 4)
    with torch.no_grad():
        post, q = ref.encode(x).latent_dist, ours.encode(x)
        assert (post.mean - q.mean).abs().max() < 1e-4
        assert (post.logvar - q.log_var).abs().max() < 1e-4
        assert (ref.decode(z).sample - ours.decode(z)).abs().max() < 1e-4


def test_kl_is_the_closed_form_and_zero_at_the_prior():
    mean, log_var = torch.randn(3, 2, 2, 2), torch.randn(3, 2, 2, 2)
    q = DiagonalGaussian(mean, log_var)
    p = torch.distributions.Normal(mean, (0.5 * log_var).exp())
    want = torch.distributions.kl_divergence(p, torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1)
    assert torch.allclose(q.kl(), want, atol=1e-5)
    assert torch.equal(DiagonalGaussian(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)).kl(), torch.zeros(1))


@pytest.mark.parametrize("kw,needle", [
    (dict(block_out_channels=(32, 48), norm_num_groups=32), "must divide every width"),
    (dict(image_size=30, block_out_channels=(32, 32, 32)), "divisible by the down-sampling factor f = 4"),
    (dict(block_out_channels=()), "non-empty list"),
])
def test_bad_configs_are_one_line_errors(kw, needle):
    with pytest.raises(UserError, match=needle):
        AutoencoderKLConfig(**kw)


def _save_diffusers_folder(path, **overrides):
    torch.manual_seed(1)
    ref = _diffusers_vae(**overrides)
    ref.save_pretrained(str(path), safe_serialization=True)
    return ref


def test_import_diffusers_vae_matches_diffusers(tmp_path, capsys):
    from difflab.runs import load_run

    ref = _save_diffusers_folder(tmp_path / "vae")
    code, out, err = cli(["import", "diffusers-vae", tmp_path / "vae", "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    run = load_run(tmp_path / "run", kind="autoencoder")
    ae = run.model.autoencoder
    x, z = torch.randn(2, 3, 16, 16), torch.randn(2, 4, 4, 4)
    with torch.no_grad():
        post, q = ref.encode(x).latent_dist, ae.encode(x)
        assert (post.mean - q.mean).abs().max() < 1e-4 and (post.logvar - q.log_var).abs().max() < 1e-4
        assert (ref.decode(z).sample - ae.decode(z)).abs().max() < 1e-4
    meta = json.loads(next((tmp_path / "run" / "checkpoints").glob("*.json")).read_text())
    assert meta["kind"] == "autoencoder" and meta["imported"]["scaling_factor"] == pytest.approx(0.18215)


def _snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_import_refuses_a_pickled_bin(tmp_path, capsys):
    _save_diffusers_folder(tmp_path / "vae")
    weights = tmp_path / "vae" / "diffusion_pytorch_model.safetensors"
    weights.rename(tmp_path / "vae" / "diffusion_pytorch_model.bin")
    code, _, err = cli(["import", "diffusers-vae", tmp_path / "vae", "--out", tmp_path / "run"], capsys)
    assert "a pickle that difflab never loads" in one_line_error(code, err)
    assert not (tmp_path / "run").exists()


def test_import_refuses_a_config_field_it_cannot_honour(tmp_path, capsys):
    _save_diffusers_folder(tmp_path / "vae")
    cfg = tmp_path / "vae" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "shift_factor": 0.1159}))
    code, _, err = cli(["import", "diffusers-vae", tmp_path / "vae", "--out", tmp_path / "run"], capsys)
    assert "shift_factor 0.1159 has no difflab equivalent" in one_line_error(code, err)


def test_import_force_validates_before_touching_the_old_run(tmp_path, capsys):
    _save_diffusers_folder(tmp_path / "vae")
    assert cli(["import", "diffusers-vae", tmp_path / "vae", "--out", tmp_path / "run"], capsys)[0] == 0
    before = _snapshot(tmp_path / "run")
    cfg = tmp_path / "vae" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "layers_per_block": 1}))  # the weights no longer fit
    code, _, err = cli(["import", "diffusers-vae", tmp_path / "vae", "--out", tmp_path / "run", "--force"], capsys)
    assert "do not match config.json's layout" in one_line_error(code, err)
    assert _snapshot(tmp_path / "run") == before and not (tmp_path / "run" / ".replaced").exists()
