"""The diffusion transformer (Peebles & Xie 2023): released sizes, DiT's conventions (checked against closed forms
written out here, not against the code under test), adaLN-Zero, patchify/unpatchify, the null label, config errors."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from conftest import cli, one_line_error
from difflab.denoiser import DenoiserConfig, ModelDenoiser
from difflab.errors import UserError
from difflab.nets import DIT_PRESETS, DiT, DiTConfig, count_parameters
from difflab.process import ProcessConfig, build_process

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = DiTConfig(image_size=8, in_channels=3, out_channels=3, patch_size=2, hidden_size=32, depth=2, num_heads=4, num_classes=5)


def _randomised(cfg: DiTConfig, seed: int = 0) -> DiT:
    """A DiT with every trainable weight random (DiT's init zeroes the adaLN and output layers)."""
    torch.manual_seed(seed)
    net = DiT(cfg).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name != "pos_embed":
                p.normal_(0, 0.2)
    return net


# facebookresearch/DiT's train.py prints these for DiT_XL_2 ... DiT_S_2 (input 32x32x4, 1,000 classes, learn_sigma).
RELEASED = {"dit-xl-2": 675_129_632, "dit-l-2": 458_102_816, "dit-b-2": 130_512_416, "dit-s-2": 32_963_360,
            "dit-b-4": 130_475_648, "dit-xl-2-512": 676_014_368}


@pytest.mark.parametrize("name", RELEASED)
def test_released_parameter_counts_on_the_meta_device(name):
    assert count_parameters(DIT_PRESETS[name]) == RELEASED[name]


def test_difflab_model_prints_the_released_count(capsys):
    code, out, _ = cli(["model", "dit-xl-2"], capsys)
    assert code == 0 and "parameters: 675,129,632" in out


def test_timestep_features_are_dits_cos_then_sin_over_half():
    """DiT's TimestepEmbedder (from GLIDE): 256 features [cos(t w_k), sin(t w_k)], w_k = 10000^(-k/128), k = 0..127."""
    net = DiT(SMALL)
    seen = {}
    net.t_embedder.mlp[0].register_forward_pre_hook(lambda m, args: seen.setdefault("f", args[0]))
    t = torch.tensor([0, 7, 999])
    net.t_embedder(t)
    want = np.array([[math.cos(tt * 10000 ** (-k / 128)) for k in range(128)] + [math.sin(tt * 10000 ** (-k / 128)) for k in range(128)]
                     for tt in t.tolist()])
    assert seen["f"].shape == (3, 256)
    assert np.abs(seen["f"].numpy() - want).max() < 1e-4


def test_position_embedding_is_mae_sincos_column_half_first():
    """pos_embed[row * g + col] = [sin(col w), cos(col w), sin(row w), cos(row w)], w_k = 10000^(-k/(d/4)): sin first,
    unlike the timestep features; the first half encodes the column (MAE's meshgrid puts w first)."""
    cfg = DiTConfig(image_size=6, in_channels=1, out_channels=1, patch_size=2, hidden_size=8, depth=1, num_heads=2, num_classes=None,
                    class_dropout_null=False)
    net = DiT(cfg)
    g, q = 3, 2  # grid 3x3, d/4 = 2 frequencies per sin/cos quarter
    w = [10000 ** (-k / q) for k in range(q)]
    for row in range(g):
        for col in range(g):
            want = ([math.sin(col * x) for x in w] + [math.cos(col * x) for x in w]
                    + [math.sin(row * x) for x in w] + [math.cos(row * x) for x in w])
            assert net.pos_embed[0, row * g + col].tolist() == pytest.approx(want, abs=1e-6)
    assert not net.pos_embed.requires_grad  # fixed, never trained


def test_adaln_zero_blocks_start_as_the_identity_and_the_output_as_zero():
    net = DiT(SMALL)
    for block in net.blocks:
        last = block.adaLN_modulation[-1]
        assert last.weight.abs().max() == 0 and last.bias.abs().max() == 0
        h, c = torch.randn(2, 16, 32), torch.randn(2, 32)
        assert torch.equal(block(h, c), h)  # every gate alpha is 0
    out = net(torch.randn(2, 3, 8, 8), torch.tensor([3, 900]), torch.tensor([1, 4]))
    assert out.shape == (2, 6, 8, 8) and out.abs().max() == 0
    # Not dead weight: once the modulation is trained, c moves the output.
    net = _randomised(SMALL)
    a = net(torch.zeros(1, 3, 8, 8), torch.tensor([3]), torch.tensor([1]))
    b = net(torch.zeros(1, 3, 8, 8), torch.tensor([300]), torch.tensor([1]))
    assert (a - b).abs().max() > 1e-3


def test_unpatchify_puts_each_token_back_on_its_patch():
    """Token (row, col) holds its p x p x C values in (i, j, c) order (DiT's 'nhwpqc' layout)."""
    cfg = DiTConfig(image_size=6, in_channels=2, out_channels=2, patch_size=3, hidden_size=8, depth=1, num_heads=2,
                    num_classes=None, class_dropout_null=False, learn_sigma=False)
    img = torch.randn(1, 2, 6, 6)
    g, p, c = 2, 3, 2
    tokens = torch.zeros(1, g * g, p * p * c)
    for row in range(g):
        for col in range(g):
            for i in range(p):
                for j in range(p):
                    for ch in range(c):
                        tokens[0, row * g + col, (i * p + j) * c + ch] = img[0, ch, row * p + i, col * p + j]
    assert torch.equal(DiT(cfg).unpatchify(tokens), img)


def test_patchify_is_a_stride_p_conv_in_raster_order():
    net = _randomised(SMALL)
    x = torch.randn(1, 3, 8, 8)
    tokens = net.x_embedder(x)  # (1, 16, 32)
    w, b = net.x_embedder.proj.weight, net.x_embedder.proj.bias  # (32, 3, 2, 2)
    row, col = 2, 3
    want = (w * x[0, :, 2 * row:2 * row + 2, 2 * col:2 * col + 2]).sum((1, 2, 3)) + b
    assert torch.allclose(tokens[0, row * 4 + col], want, atol=1e-5)


def test_null_label_is_y_none_and_unconditional_dits_refuse_labels():
    net = _randomised(SMALL)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 500])
    assert torch.equal(net(x, t, None), net(x, t, torch.tensor([5, 5])))  # row num_classes = 5 is the null label
    assert not torch.equal(net(x, t, None), net(x, t, torch.tensor([0, 0])))
    uncond = DiT(dataclasses.replace(SMALL, num_classes=None, class_dropout_null=False))
    with pytest.raises(ValueError, match="unconditional"):
        uncond(x, t, torch.tensor([0, 1]))


def test_learned_sigma_follows_dits_learned_range_on_its_linear_schedule():
    """DiT's gaussian_diffusion (LEARNED_RANGE, as ADM): frac = (v + 1) / 2 between log beta_t and the clipped log
    posterior variance, on betas = linspace(1e-4, 0.02, 1000) in float64; eps is channels [0, C), v channels [C, 2C)."""
    torch.manual_seed(0)
    net = _randomised(SMALL)
    den = ModelDenoiser(net, build_process(ProcessConfig(kind="vp", schedule="linear", T=1000)),
                        DenoiserConfig(var_type="learned_range", clip_x0=False))
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    alpha_bar = np.cumprod(1 - betas)
    alpha_bar_prev = np.append(1.0, alpha_bar[:-1])
    post_var = betas * (1 - alpha_bar_prev) / (1 - alpha_bar)
    post_log_clipped = np.log(np.append(post_var[1], post_var[1:]))
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 5])
    t = torch.tensor([0, 1, 500, 999])
    with torch.no_grad():
        v = net(x, t, y)[:, 3:].double().numpy()
        pred = den(x, t, y)
    frac = (v + 1) / 2
    tt = t.numpy()[:, None, None, None]
    want = frac * np.log(betas)[tt] + (1 - frac) * post_log_clipped[tt]
    assert np.abs(pred.log_var.double().numpy() - want).max() < 1e-4


def test_config_errors_name_the_key_and_the_fix():
    with pytest.raises(UserError, match=r"model.image_size 30 is not divisible by model.patch_size 4; choose a patch_size that divides it \(e.g. 2\)"):
        DiTConfig(image_size=30, patch_size=4)
    with pytest.raises(UserError, match="model.hidden_size 100 is not divisible by model.num_heads 16"):
        DiTConfig(hidden_size=100)
    with pytest.raises(UserError, match="class_dropout_null needs a class-conditional model"):
        DiTConfig(num_classes=None)


def test_cli_refuses_an_image_size_not_divisible_by_the_patch_size(tmp_path, capsys):
    code, _, err = cli(["train", "--config", "digits-dit", "--out", str(tmp_path / "r"), "--set", "model.patch_size=3"], capsys)
    assert "model.image_size 8 is not divisible by model.patch_size 3" in one_line_error(code, err)
    assert not (tmp_path / "r").exists()
