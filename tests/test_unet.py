"""The ADM U-Net: preset parameter counts, shapes, conditioning, attention layouts, config validation."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from difflab.configs import from_dict, to_dict
from difflab.errors import UserError
from difflab.nets import UNET_PRESETS, UNet, UNetConfig, build_unet, count_parameters, summarize_unet, unet_preset
from difflab.nets.attention import QKVAttention, QKVAttentionLegacy
from difflab.nets.embeddings import timestep_embedding

# guided-diffusion's released models and the DDPM CIFAR-10 model (= diffusers' google/ddpm-cifar10-32).
EXPECTED_PARAMETERS = {
    "digits": 1_456_897,
    "ddpm-cifar10": 35_746_307,
    "adm-imagenet64": 295_904_454,
    "adm-imagenet128": 421_529_606,
    "adm-imagenet256": 553_838_086,
    "adm-lsun256": 552_814_086,
}

# A small ADM-like net exercising every option: BigGAN up/down, AdaGN, multi-head attention, labels, learn_sigma.
TINY = UNetConfig(
    image_size=16,
    in_channels=3,
    out_channels=3,
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(16, 8),
    num_head_channels=16,
    resblock_updown=True,
    use_scale_shift_norm=True,
    num_classes=5,
    learn_sigma=True,
    norm_groups=8,
)


def _randomize(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every parameter so zero-initialised output layers do not hide the conditioning."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return net


def test_presets_are_the_expected_set():
    assert set(UNET_PRESETS) == set(EXPECTED_PARAMETERS)


@pytest.mark.parametrize("name", list(EXPECTED_PARAMETERS))
def test_preset_parameter_counts(name):
    with torch.device("meta"):
        net = build_unet(name)
    assert sum(p.numel() for p in net.parameters()) == EXPECTED_PARAMETERS[name]
    assert count_parameters(unet_preset(name)) == EXPECTED_PARAMETERS[name]


def test_guided_diffusion_module_names():
    """State-dict keys and shapes follow openai/guided-diffusion's UNetModel, so its checkpoints load as is."""
    with torch.device("meta"):
        sd = build_unet("adm-imagenet64").state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["time_embed.0.weight"] == (768, 192)
    assert shapes["time_embed.2.weight"] == (768, 768)
    assert shapes["label_emb.weight"] == (1000, 768)
    assert shapes["input_blocks.0.0.weight"] == (192, 3, 3, 3)
    assert shapes["input_blocks.1.0.in_layers.0.weight"] == (192,)
    assert shapes["input_blocks.1.0.in_layers.2.weight"] == (192, 192, 3, 3)
    assert shapes["input_blocks.1.0.emb_layers.1.weight"] == (2 * 192, 768)  # AdaGN: scale and shift
    assert shapes["input_blocks.1.0.out_layers.3.weight"] == (192, 192, 3, 3)
    assert shapes["input_blocks.4.0.in_layers.2.weight"] == (192, 192, 3, 3)  # BigGAN downsampling ResBlock
    assert shapes["input_blocks.5.0.skip_connection.weight"] == (384, 192, 1, 1)
    assert shapes["input_blocks.5.1.qkv.weight"] == (3 * 384, 384, 1)  # attention at 32 px
    assert shapes["input_blocks.5.1.proj_out.weight"] == (384, 384, 1)
    assert shapes["input_blocks.5.1.norm.weight"] == (384,)
    assert shapes["middle_block.1.qkv.weight"] == (3 * 768, 768, 1)
    assert shapes["output_blocks.3.2.in_layers.2.weight"] == (768, 768, 3, 3)  # BigGAN upsampling ResBlock
    assert shapes["out.0.weight"] == (192,)
    assert shapes["out.2.weight"] == (6, 192, 3, 3)
    with torch.device("meta"):
        net = build_unet("adm-imagenet64")
    assert net.input_blocks[5][1].num_heads == 384 // 64
    assert len(net.input_blocks) == 1 + 4 * 3 + 3 and len(net.output_blocks) == 4 * 4


def test_ddpm_cifar10_layout():
    with torch.device("meta"):
        net = build_unet("ddpm-cifar10")
    attn = [name for name, m in net.named_modules() if type(m).__name__ == "AttentionBlock"]
    # Attention at 16x16 only: two blocks down, three up, one in the middle; single head everywhere.
    assert attn == ["input_blocks.4.1", "input_blocks.5.1", "middle_block.1", "output_blocks.6.1", "output_blocks.7.1", "output_blocks.8.1"]
    assert all(net.get_submodule(a).num_heads == 1 for a in attn)
    assert not hasattr(net, "label_emb")


def test_outputs_are_zero_at_initialisation():
    """ADM zero-initialises the output conv, so a fresh network predicts exactly zero."""
    net = UNet(TINY)
    out = net(torch.randn(2, 3, 16, 16), torch.tensor([1, 500]), torch.tensor([0, 4]))
    assert out.shape == (2, 6, 16, 16)
    assert torch.count_nonzero(out) == 0


@pytest.mark.parametrize("learn_sigma", [False, True])
def test_output_shape_and_learn_sigma(learn_sigma):
    cfg = dataclasses.replace(TINY, learn_sigma=learn_sigma, num_classes=None)
    out = UNet(cfg)(torch.randn(3, 3, 16, 16), torch.tensor([0, 10, 999]))
    assert out.shape == (3, 6 if learn_sigma else 3, 16, 16)
    assert cfg.output_channels == out.shape[1]


def test_digits_shapes_and_continuous_time():
    net = _randomize(build_unet("digits")).eval()
    x = torch.randn(4, 1, 8, 8)
    y = torch.tensor([0, 3, 9, 10])  # 10 = the null label
    out_int = net(x, torch.tensor([0, 1, 2, 3]), y)
    out_float = net(x, torch.tensor([0.0, 1.0, 2.0, 3.0]), y)
    assert out_int.shape == (4, 1, 8, 8)
    torch.testing.assert_close(out_int, out_float)
    assert not torch.allclose(net(x, torch.full((4,), 0.5), y), out_float)  # continuous t is a valid input
    torch.testing.assert_close(net(x, torch.tensor(7), y), net(x, torch.full((4,), 7), y))  # scalar t broadcasts


def test_labels_change_the_output():
    net = _randomize(UNet(TINY)).eval()
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([100, 100])
    a = net(x, t, torch.tensor([0, 0]))
    b = net(x, t, torch.tensor([0, 3]))
    torch.testing.assert_close(a[0], b[0])  # per-example conditioning: example 0 unchanged
    assert (a[1] - b[1]).abs().max() > 1e-4


def test_null_label_for_classifier_free_guidance():
    cfg = dataclasses.replace(TINY, class_dropout_null=True)
    assert cfg.num_label_embeddings == TINY.num_classes + 1
    assert count_parameters(cfg) == count_parameters(TINY) + cfg.emb_dim
    net = _randomize(UNet(cfg)).eval()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 6])
    torch.testing.assert_close(net(x, t, None), net(x, t, torch.tensor([5, 5])))


def test_conditioning_mismatch_is_an_error():
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([1])
    with pytest.raises(ValueError, match="class-conditional"):
        UNet(TINY)(x, t)
    with pytest.raises(ValueError, match="unconditional"):
        UNet(dataclasses.replace(TINY, num_classes=None))(x, t, torch.tensor([0]))


@pytest.mark.parametrize(
    "overrides",
    [
        dict(use_new_attention_order=True),
        dict(resblock_updown=False, downsample_padding=0),
        dict(resblock_updown=False, conv_resample=False, use_scale_shift_norm=False),
        dict(num_head_channels=-1, num_heads=2, num_heads_upsample=4),
        dict(mid_attention=False, attention_resolutions=()),
        dict(time_embed_dim=48, time_embed_flip_sin_to_cos=False, time_embed_freq_shift=1),
    ],
)
def test_variants_run_and_backpropagate(overrides):
    cfg = dataclasses.replace(TINY, **overrides)
    net = UNet(cfg)
    out = net(torch.randn(2, 3, 16, 16), torch.tensor([3, 4]), torch.tensor([1, 2]))
    assert out.shape == (2, 6, 16, 16)
    out.sum().backward()
    assert net.out[2].weight.grad.abs().sum() > 0


def test_gradient_checkpointing_matches():
    torch.manual_seed(0)
    plain = _randomize(UNet(TINY))
    ckpt = UNet(dataclasses.replace(TINY, use_checkpoint=True))
    ckpt.load_state_dict(plain.state_dict())
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([3, 900]), torch.tensor([1, 2])
    for net in (plain, ckpt):
        net(x, t, y).square().mean().backward()
    torch.testing.assert_close(ckpt(x, t, y), plain(x, t, y))
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)


def _adm_attention_reference(qkv: torch.Tensor, n_heads: int, legacy: bool) -> torch.Tensor:
    """guided-diffusion's QKVAttention(Legacy) written out with einsum, independently of difflab's code."""
    bs, width, length = qkv.shape
    ch = width // (3 * n_heads)
    if legacy:
        q, k, v = qkv.reshape(bs * n_heads, ch * 3, length).split(ch, dim=1)
    else:
        q, k, v = (z.reshape(bs * n_heads, ch, length) for z in qkv.chunk(3, dim=1))
    w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(ch), dim=-1)
    return torch.einsum("bts,bcs->bct", w, v).reshape(bs, -1, length)


@pytest.mark.parametrize("legacy", [True, False])
def test_attention_head_layouts_match_adm(legacy):
    qkv = torch.randn(2, 3 * 4 * 8, 10, dtype=torch.float64)
    module = QKVAttentionLegacy(4) if legacy else QKVAttention(4)
    torch.testing.assert_close(module(qkv), _adm_attention_reference(qkv, 4, legacy))
    other = QKVAttention(4) if legacy else QKVAttentionLegacy(4)
    assert not torch.allclose(other(qkv), module(qkv))


def test_timestep_embedding_formulas():
    t = torch.tensor([0.0, 3.0, 250.5])
    dim, half = 8, 4
    adm = timestep_embedding(t, dim)  # [cos, sin], w_k = 10000^(-k/half)
    w = torch.tensor([10000 ** (-k / half) for k in range(half)])
    torch.testing.assert_close(adm, torch.cat([torch.cos(t[:, None] * w), torch.sin(t[:, None] * w)], dim=1))
    ddpm = timestep_embedding(t, dim, flip_sin_to_cos=False, freq_shift=1)  # [sin, cos], w_k = 10000^(-k/(half-1))
    w = torch.tensor([10000 ** (-k / (half - 1)) for k in range(half)])
    torch.testing.assert_close(ddpm, torch.cat([torch.sin(t[:, None] * w), torch.cos(t[:, None] * w)], dim=1))
    assert timestep_embedding(t, 7).shape == (3, 7)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(model_channels=36), "not divisible by norm_groups"),
        (dict(num_head_channels=24), "cannot be split"),
        (dict(num_head_channels=-1, num_heads=3), "cannot be split"),
        (dict(num_head_channels=-1, num_heads=2, num_heads_upsample=3), "cannot be split"),
        (dict(attention_resolutions=(12,)), "valid: 16, 8"),
        (dict(image_size=15), "divisible by 2"),
        (dict(num_classes=None, class_dropout_null=True), "set model.num_classes"),
        (dict(num_classes=0), "num_classes"),
        (dict(dropout=1.0), "dropout"),
        (dict(channel_mult=()), "channel_mult"),
        (dict(norm_eps=0.0), "norm_eps"),
    ],
)
def test_config_validation(overrides, match):
    with pytest.raises(UserError, match=match):
        dataclasses.replace(TINY, **overrides)


def test_config_round_trips_through_json_dicts():
    for name, cfg in UNET_PRESETS.items():
        assert from_dict(UNetConfig, to_dict(cfg)) == cfg, name
    with pytest.raises(UserError, match="must be one of 0, 1"):
        from_dict(UNetConfig, {"downsample_padding": 2})
    fields = dataclasses.fields(UNetConfig)
    assert all(f.metadata.get("help") for f in fields)


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(UserError, match="ddpm-cifar10"):
        unet_preset("cifar")


def test_summary():
    text = summarize_unet("ddpm-cifar10")
    assert "35,746,307" in text
    assert "16x16" in text and "1x256" in text
    assert "1000 classes" in summarize_unet("adm-imagenet64")
