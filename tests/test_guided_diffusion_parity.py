"""Parity of difflab's ADM U-Net, noise-aware classifier and VP math with openai/guided-diffusion's code.

guided-diffusion is a test-only reference (PyPI `guided_diffusion_sdk==1.0.0`, which packages guided-diffusion's
code; its unet.py differs from upstream only in AttentionBlock's gradient-checkpoint flag, which does not change
outputs). Both networks are built from one set of guided-diffusion constructor arguments, every reference
parameter (the zero-initialised output convs included) is overwritten with seeded noise, and the state dict is
loaded into difflab's net unchanged: keys and shapes must match one to one, and outputs agree in float64.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

with warnings.catch_warnings():  # the sdist's nn.py uses torch.cuda.amp.custom_fwd, deprecated in torch 2.4
    warnings.simplefilter("ignore", FutureWarning)
    from guided_diffusion import gaussian_diffusion as gd
    from guided_diffusion import script_util
    from guided_diffusion import unet as gd_unet

from difflab.denoiser import DenoiserConfig, ModelDenoiser
from difflab.losses.vlb import vlb_terms
from difflab.nets import UNet, count_parameters, unet_preset
from difflab.nets.classifier import NoisyClassifierNet, classifier_preset
from difflab.process import ProcessConfig, build_process
from difflab.interop.guided_diffusion import classifier_config_from_guided, unet_config_from_guided

TOL64 = dict(rtol=1e-10, atol=1e-10)

# Small UNetModel configurations that together exercise every option difflab maps (attention_resolutions are
# guided-diffusion's downsampling rates). GroupNorm(32, .) fixes widths to multiples of 32.
UNET_CASES = {
    "cond-learnsigma-adagn-updown-headch-neworder": dict(
        image_size=16, in_channels=3, model_channels=32, out_channels=6, num_res_blocks=1, attention_resolutions=(2, 4),
        channel_mult=(1, 2, 2), num_classes=10, num_head_channels=32, use_scale_shift_norm=True, resblock_updown=True,
        use_new_attention_order=True),
    "uncond-added-emb-convresample-heads-upsample": dict(
        image_size=8, in_channels=3, model_channels=32, out_channels=3, num_res_blocks=2, attention_resolutions=(1, 2),
        channel_mult=(1, 2), num_heads=2, num_heads_upsample=4, use_scale_shift_norm=False, resblock_updown=False),
    "adm128-style-num-heads-legacy-order": dict(
        image_size=16, in_channels=3, model_channels=32, out_channels=6, num_res_blocks=1, attention_resolutions=(4, 2),
        channel_mult=(1, 1, 2), num_classes=5, num_heads=4, use_scale_shift_norm=True, resblock_updown=True),
    "pool-nearest-resample-wide-first-level": dict(
        image_size=8, in_channels=1, model_channels=32, out_channels=2, num_res_blocks=1, attention_resolutions=(4,),
        channel_mult=(2, 1, 2), conv_resample=False, num_head_channels=32, use_scale_shift_norm=True),
}

CLASSIFIER_CASES = {
    "adm-clf-style": dict(
        image_size=16, in_channels=3, model_channels=32, out_channels=7, num_res_blocks=2, attention_resolutions=(2, 4),
        channel_mult=(1, 2, 2), num_head_channels=32, use_scale_shift_norm=True, resblock_updown=True, pool="attention"),
    "plain-downsample-new-order": dict(
        image_size=8, in_channels=3, model_channels=32, out_channels=4, num_res_blocks=1, attention_resolutions=(1,),
        channel_mult=(1, 2), num_head_channels=16, use_new_attention_order=True, use_scale_shift_norm=False,
        resblock_updown=False, pool="attention"),
}


def perturb_(module: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter with seeded noise of a sensible scale, so zero-initialised layers count too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            std = 1 / math.sqrt(p[0].numel()) if p.ndim > 1 else 0.5
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


@pytest.fixture
def reference_float64(monkeypatch):
    """A function that turns a guided-diffusion model to float64 and, from then on, removes its fp16-era casts.

    Its GroupNorm32 and attention softmax call `.float()`, its timestep features are float32 and fed to
    time_embed uncast, and its forward casts x to `self.dtype` (float32 unless use_fp16). The patches only
    change dtypes, and are applied after the float32 comparison with the reference as released.
    """
    to_float = torch.Tensor.float
    features = gd_unet.timestep_embedding  # float32 features, exactly as difflab computes them; difflab casts them to the weights' dtype

    def as_float64(model):
        monkeypatch.setattr(torch.Tensor, "float", lambda self, *a, **k: self if self.dtype == torch.float64 else to_float(self, *a, **k))
        monkeypatch.setattr(gd_unet, "timestep_embedding", lambda t, dim, **k: features(t, dim, **k).double())
        model.double().eval()
        model.dtype = torch.float64
        return model

    return as_float64


def _inputs(image_size: int, channels: int, num_classes: int | None, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, channels, image_size, image_size, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 17, 503, 999])  # integer steps, as guided-diffusion's samplers pass them
    y = torch.randint(0, num_classes, (4,), generator=g) if num_classes else None
    return x, t, y


def _assert_same_keys_and_shapes(ref: dict, ours: dict) -> None:
    assert list(ref) == list(ours), f"key order/names differ: only guided {set(ref) - set(ours)}, only difflab {set(ours) - set(ref)}"
    bad = [k for k in ref if ref[k].shape != ours[k].shape]
    assert not bad, f"shape mismatch: {[(k, tuple(ref[k].shape), tuple(ours[k].shape)) for k in bad]}"


@pytest.mark.parametrize("name", list(UNET_CASES))
def test_unet_state_dict_and_outputs_match_guided_diffusion(name, reference_float64):
    kwargs = UNET_CASES[name]
    torch.manual_seed(0)
    ref = gd_unet.UNetModel(**kwargs)
    perturb_(ref, seed=1)
    ours = UNet(unet_config_from_guided(**kwargs))
    _assert_same_keys_and_shapes(ref.state_dict(), ours.state_dict())
    ours.load_state_dict(ref.state_dict())  # strict: no renaming, no missing or unexpected key
    x, t, y = _inputs(kwargs["image_size"], kwargs["in_channels"], kwargs.get("num_classes"), seed=2)
    with torch.no_grad():
        out32 = ours(x.to(torch.float32), t, y)
        ref32 = ref(x.to(torch.float32), t, y)  # the reference as released, in float32
        torch.testing.assert_close(out32, ref32, rtol=1e-4, atol=1e-4)
        ours.double().eval()
        expected, got = reference_float64(ref)(x, t, y), ours(x, t, y)
    assert expected.dtype == got.dtype == torch.float64
    assert expected.abs().max() > 0.1  # the perturbed output conv makes the output non-trivial
    torch.testing.assert_close(got, expected, **TOL64)


def test_parity_would_catch_a_wrong_attention_order(reference_float64):
    """The comparison is sensitive: loading the same weights into the other head layout changes the output."""
    kwargs = dict(UNET_CASES["adm128-style-num-heads-legacy-order"])
    ref = gd_unet.UNetModel(**kwargs)
    perturb_(ref, seed=3)
    wrong = UNet(unet_config_from_guided(**{**kwargs, "use_new_attention_order": True}))
    wrong.load_state_dict(ref.state_dict())
    x, t, y = _inputs(kwargs["image_size"], 3, kwargs["num_classes"], seed=4)
    with torch.no_grad():
        diff = (reference_float64(ref)(x, t, y) - wrong.double()(x, t, y)).abs().max()
    assert diff > 1e-3


@pytest.mark.parametrize("name", list(CLASSIFIER_CASES))
def test_classifier_state_dict_and_logits_match_guided_diffusion(name, reference_float64):
    kwargs = CLASSIFIER_CASES[name]
    torch.manual_seed(0)
    ref = gd_unet.EncoderUNetModel(**kwargs)
    perturb_(ref, seed=5)
    ours = NoisyClassifierNet(classifier_config_from_guided(**kwargs))
    _assert_same_keys_and_shapes(ref.state_dict(), ours.state_dict())
    ours.load_state_dict(ref.state_dict())
    x, t, _ = _inputs(kwargs["image_size"], kwargs["in_channels"], None, seed=6)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x.to(torch.float32), t), ref.eval()(x.to(torch.float32), t), rtol=1e-4, atol=1e-4)
        ours.double()
        expected, got = reference_float64(ref)(x, t), ours(x, t)
    assert expected.shape == (4, kwargs["out_channels"]) and expected.std() > 0.1
    torch.testing.assert_close(got, expected, **TOL64)


# README MODEL_FLAGS of each released diffusion model -> difflab preset (dropout only matters in training).
RELEASED_MODEL_FLAGS = {
    "adm-imagenet64": dict(image_size=64, num_channels=192, num_res_blocks=3, attention_resolutions="32,16,8", class_cond=True,
                           learn_sigma=True, num_head_channels=64, resblock_updown=True, use_new_attention_order=True,
                           use_scale_shift_norm=True, dropout=0.1),
    "adm-imagenet128": dict(image_size=128, num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8", class_cond=True,
                            learn_sigma=True, num_heads=4, resblock_updown=True, use_scale_shift_norm=True),
    "adm-imagenet256": dict(image_size=256, num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8", class_cond=True,
                            learn_sigma=True, num_head_channels=64, resblock_updown=True, use_scale_shift_norm=True),
    "adm-lsun256": dict(image_size=256, num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8", class_cond=False,
                        learn_sigma=True, num_head_channels=64, resblock_updown=True, use_scale_shift_norm=True, dropout=0.1),
}
# script_util.create_classifier arguments of the released classifiers (README CLASSIFIER_FLAGS; depth 4 at 64x64, paper Table 12).
RELEASED_CLASSIFIER_FLAGS = {
    f"adm-imagenet{size}-clf": (size, False, 128, depth, "32,16,8", True, True, "attention")
    for size, depth in ((64, 4), (128, 2), (256, 2))
}


def _meta_shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("preset", list(RELEASED_MODEL_FLAGS))
def test_released_model_shapes_and_parameter_counts_match_presets(preset):
    with torch.device("meta"):  # 300-550 M parameters: shapes only
        ref = script_util.create_model(**RELEASED_MODEL_FLAGS[preset])
        ours = UNet(unet_preset(preset))
    assert _meta_shapes(ref) == _meta_shapes(ours)
    assert count_parameters(preset) == sum(p.numel() for p in ref.parameters())


@pytest.mark.parametrize("preset", list(RELEASED_CLASSIFIER_FLAGS))
def test_released_classifier_shapes_and_parameter_counts_match_presets(preset):
    with torch.device("meta"):
        ref = script_util.create_classifier(*RELEASED_CLASSIFIER_FLAGS[preset])
        ours = NoisyClassifierNet(classifier_preset(preset))
    assert _meta_shapes(ref) == _meta_shapes(ours)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


# ---- the VP math: schedules, posterior, p_mean_variance with LEARNED_RANGE, variational-bound terms ----


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedules_and_posterior_tables_match_gaussian_diffusion(schedule):
    T = 1000
    ref = gd.GaussianDiffusion(betas=gd.get_named_beta_schedule(schedule, T), model_mean_type=gd.ModelMeanType.EPSILON,
                               model_var_type=gd.ModelVarType.LEARNED_RANGE, loss_type=gd.LossType.MSE)
    p = build_process(ProcessConfig(kind="vp", schedule=schedule, T=T))
    t = torch.arange(T)
    alpha_bar = (p.a(t) ** 2).numpy()
    np.testing.assert_allclose(alpha_bar, ref.alphas_cumprod, rtol=1e-12)
    np.testing.assert_allclose(p.posterior_var(t[1:], t[1:] - 1).numpy(), ref.posterior_variance[1:], rtol=1e-10)
    np.testing.assert_allclose(p.posterior_log_var_clipped(t, t - 1).numpy(), ref.posterior_log_variance_clipped, rtol=1e-10)
    c1, c2 = p.posterior_coefs(t, t - 1)
    np.testing.assert_allclose(c1.numpy(), ref.posterior_mean_coef1, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(c2.numpy(), ref.posterior_mean_coef2, rtol=1e-10, atol=1e-14)


def _learned_range_case(clip: bool):
    """GaussianDiffusion and difflab's denoiser (eps, learned_range, linear T=1000) on one random network output."""
    T = 1000
    ref = gd.GaussianDiffusion(betas=gd.get_named_beta_schedule("linear", T), model_mean_type=gd.ModelMeanType.EPSILON,
                               model_var_type=gd.ModelVarType.LEARNED_RANGE, loss_type=gd.LossType.MSE)
    g = torch.Generator().manual_seed(7)
    x0 = torch.round((torch.rand(5, 3, 4, 4, generator=g) * 2) * 127.5) / 127.5 - 1  # on the 8-bit grid, as the decoder assumes
    x_t = torch.randn(5, 3, 4, 4, generator=g)
    t = torch.tensor([0, 1, 250, 700, 999])
    output = torch.cat([torch.randn(5, 3, 4, 4, generator=g), torch.rand(5, 3, 4, 4, generator=g) * 2 - 1], dim=1)

    def net(x, tt, y=None):
        return output

    den = ModelDenoiser(net, build_process(ProcessConfig(schedule="linear", T=T)), DenoiserConfig(var_type="learned_range", clip_x0=clip))
    return ref, den, net, x0, x_t, t


# GaussianDiffusion reads its float64 tables into float32 (_extract_into_tensor), hence float32 tolerances.
KW32 = dict(rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("clip", [True, False])
def test_learned_range_prediction_and_vlb_terms_match_gaussian_diffusion(clip):
    """p_mean_variance (eps, LEARNED_RANGE, clip_denoised) and _vb_terms_bpd agree for every t > 0."""
    ref, den, net, x0, x_t, t = _learned_range_case(clip)
    expected = ref.p_mean_variance(net, x_t, t, clip_denoised=clip)
    pred = den(x_t, t)
    if not clip:  # unclipped, eps is the network's first half as is
        torch.testing.assert_close(pred.eps.float(), net(x_t, t)[:, :3])
    torch.testing.assert_close(pred.x0.float(), expected["pred_xstart"], **KW32)
    torch.testing.assert_close(pred.mean.float(), expected["mean"], **KW32)
    log_var = pred.log_var.float().expand_as(expected["log_variance"])
    torch.testing.assert_close(log_var[1:], expected["log_variance"][1:], **KW32)
    vb_ref = ref._vb_terms_bpd(net, x0, x_t, t, clip_denoised=clip)["output"]
    torch.testing.assert_close(vlb_terms(den, x0, x_t, t).float()[1:], vb_ref[1:], rtol=1e-4, atol=1e-4)


def test_learned_range_log_variance_and_decoder_term_at_t0_match_gaussian_diffusion():
    """At t = 0 the learned range is [log beta_tilde_1, log beta_1] (improved DDPM Eq. 15); difflab once used a point there.

    The decoder term L_0 is compared where it is meaningful, x_t = q(x_1 | x_0) and a network whose eps is close to the
    truth: there guided-diffusion's tanh approximation of the normal CDF (difflab's is exact, losses/gaussian.py) moves
    L_0 by well under 1%. (For an x_t far from x_0 the two differ by thousands of bits: its 1e-12 clamp caps the NLL.)"""
    ref, den, net, x0, _, _ = _learned_range_case(clip=True)
    g = torch.Generator().manual_seed(11)
    t = torch.zeros(x0.shape[0], dtype=torch.long)
    noise = torch.randn(x0.shape, generator=g)
    x_t = den.process.q_sample(x0.double(), t, noise.double()).float()
    v = torch.rand(x0.shape, generator=g) * 2 - 1
    output = torch.cat([noise + 0.05 * torch.randn(x0.shape, generator=g), v], dim=1)

    def close_net(x, tt, y=None):
        return output

    den = ModelDenoiser(close_net, den.process, den.cfg)
    expected = ref.p_mean_variance(close_net, x_t, t, clip_denoised=True)
    log_var = den(x_t, t).log_var.float().expand_as(expected["log_variance"])
    torch.testing.assert_close(log_var, expected["log_variance"], **KW32)
    vb_ref = ref._vb_terms_bpd(close_net, x0, x_t, t, clip_denoised=True)["output"]
    torch.testing.assert_close(vlb_terms(den, x0, x_t, t).float(), vb_ref, rtol=5e-3, atol=1e-3)