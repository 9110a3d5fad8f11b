"""Closed-form checks of difflab.losses: Gaussian KL, discretized decoder, L_simple targets, hybrid stop-gradient,
the loss-aware timestep sampler, the bound's scaling, and DSM on the VE process."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from difflab.configs import from_dict
from difflab.denoiser import DenoiserConfig, ModelDenoiser, Prediction, bcast
from difflab.errors import UserError
from difflab.losses import (
    DiffusionLoss, LossConfig, LossSecondMomentTimesteps, UniformTimesteps, discretized_gaussian_log_likelihood,
    mean_flat, normal_kl, prior_bpd, simple_target, vlb_terms,
)
from difflab.process import VEProcess, VPProcess, geometric_sigmas, linear_betas

SHAPE = (6, 3, 4, 4)
LEVELS = torch.linspace(-1, 1, 256, dtype=torch.float64)  # the 8-bit data grid


def _data(seed=0, shape=SHAPE):
    g = torch.Generator().manual_seed(seed)
    return LEVELS[torch.randint(0, 256, shape, generator=g)].float()


def _draws(loss: DiffusionLoss, g: torch.Generator, x0: torch.Tensor):
    """Replay the loss's documented draws (t, then eps) from a copy of the generator."""
    t, w = loss.sampler.sample(x0.shape[0], g)
    eps = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    return t, w, eps


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ----- Gaussian math ---------------------------------------------------------------------------------

def test_normal_kl_matches_torch_distributions():
    g = _gen(0)
    m1, m2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    lv1, lv2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(m1, (0.5 * lv1).exp()), torch.distributions.Normal(m2, (0.5 * lv2).exp()))
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), ref, rtol=1e-5, atol=1e-6)
    # broadcasting against scalars (the prior term), and float64 in -> float64 out
    ref0 = torch.distributions.kl_divergence(torch.distributions.Normal(m1.double(), (0.5 * lv1.double()).exp()), torch.distributions.Normal(0.0, 1.0))
    out0 = normal_kl(m1.double(), lv1.double(), 0.0, 0.0)
    assert out0.dtype == torch.float64
    torch.testing.assert_close(out0, ref0, rtol=1e-12, atol=1e-12)


def _scipy_bin_mass(x, mean, scale):
    """P(bin of x) under N(mean, scale^2) with scipy's CDF; the edge bins extend to +-inf."""
    d = 1 / 255
    lo, hi = (x - d - mean) / scale, (x + d - mean) / scale
    if x < -0.999:
        return stats.norm.cdf(hi)
    if x > 0.999:
        return stats.norm.sf(lo)
    return stats.norm.sf(lo) - stats.norm.sf(hi) if lo + hi > 0 else stats.norm.cdf(hi) - stats.norm.cdf(lo)


def _mpmath_log_bin(x, mean, scale):
    """The same log-mass at 50 digits, for tails where the float64 difference of CDFs underflows."""
    import mpmath

    with mpmath.workdps(50):
        d, x, mean, scale = mpmath.mpf(1) / 255, mpmath.mpf(x), mpmath.mpf(mean), mpmath.mpf(scale)
        lo = -mpmath.inf if x < -0.999 else (x - d - mean) / scale
        hi = mpmath.inf if x > 0.999 else (x + d - mean) / scale
        if lo + hi > 0:  # upper tail: Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi), which mpmath's unbounded exponent can hold
            lo, hi = -hi, -lo
        return float(mpmath.log(mpmath.ncdf(hi) - mpmath.ncdf(lo)))


@pytest.mark.parametrize("mean,scale", [(0.0, 0.3), (0.37, 0.004), (-0.95, 0.02), (0.9, 1.5), (-0.2, 0.01), (0.6, 0.05)])
def test_discretized_decoder_matches_scipy_including_edges(mean, scale):
    near = int(((LEVELS - mean).abs()).argmin())
    xs = LEVELS[sorted({0, 1, 2, 60, 127, 128, 200, 253, 254, 255, max(near - 1, 0), near, min(near + 1, 255)})]
    out = discretized_gaussian_log_likelihood(xs, torch.full_like(xs, mean), torch.full_like(xs, math.log(scale))).numpy()
    mass = np.array([_scipy_bin_mass(float(x), mean, scale) for x in xs])
    ok = mass > 1e-250  # where scipy's plain CDF difference is representable, compare with it directly
    assert ok.sum() >= 3
    np.testing.assert_allclose(out[ok], np.log(mass[ok]), rtol=1e-9, atol=1e-12)
    # far tails (mass underflows in float64): still finite and exact, checked at 50 digits
    ref = np.array([_mpmath_log_bin(float(x), mean, scale) for x in xs])
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mean,scale", [(0.0, 0.3), (0.37, 0.004), (-1.3, 0.05), (0.999, 0.001), (0.1, 3.0)])
def test_discretized_decoder_bins_sum_to_one(mean, scale):
    logp = discretized_gaussian_log_likelihood(LEVELS, torch.full_like(LEVELS, mean), torch.full_like(LEVELS, math.log(scale)))
    assert float(logp.exp().sum()) == pytest.approx(1.0, abs=1e-12)


def test_discretized_decoder_is_finite_with_gradients_far_in_the_tails():
    x = torch.tensor([-1.0, 1.0, 0.5, -0.5])
    means = torch.tensor([5.0, -5.0, -0.9, 0.9], requires_grad=True)
    log_scales = torch.full((4,), math.log(0.01), requires_grad=True)
    logp = discretized_gaussian_log_likelihood(x, means, log_scales)
    assert logp.dtype == torch.float32 and torch.isfinite(logp).all() and (logp < -1000).all()
    logp.sum().backward()
    assert torch.isfinite(means.grad).all() and torch.isfinite(log_scales.grad).all()


# ----- bound terms -------------------------------------------------------------------------------------

def test_vlb_terms_zero_for_the_true_posterior_and_decoder_at_t0():
    process = VPProcess(linear_betas(50))
    x0 = _data(1).double()
    eps = torch.randn(x0.shape, generator=_gen(2), dtype=torch.float64)
    t = torch.tensor([0, 0, 1, 10, 30, 49])
    x_t = process.q_sample(x0, t, eps)
    mean = process.posterior_mean(x0, x_t, t, t - 1)
    log_var = bcast(process.posterior_log_var_clipped(t, t - 1), x0).expand_as(x0)
    pred = Prediction(x0=x0, eps=eps, score=eps, mean=mean, log_var=log_var)
    out = vlb_terms(pred, x0, x_t, t, process=process)
    torch.testing.assert_close(out[2:], torch.zeros(4, dtype=torch.float64), atol=1e-10, rtol=0)
    # t = 0: the decoder NLL in bits of N(x0, beta_tilde_1) on x0's own bin
    sd = math.exp(0.5 * float(log_var[0].flatten()[0]))
    p_bin = stats.norm.cdf(1 / 255 / sd) - stats.norm.cdf(-1 / 255 / sd)
    interior = ((x0[:2].abs() < 0.999).double()).mean(dim=(1, 2, 3))
    edge_p = stats.norm.cdf(1 / 255 / sd)  # the edge bins extend to infinity on one side
    expected = -(interior * math.log(p_bin) + (1 - interior) * math.log(edge_p)) / math.log(2)
    torch.testing.assert_close(out[:2], expected, rtol=1e-9, atol=0)


def test_prior_bpd_closed_form_vp_and_ve():
    process = VPProcess(torch.full((20,), 0.03, dtype=torch.float64))
    x0 = _data(3).double()
    ab = 0.97**20
    expected = 0.5 * ((1 - ab) + ab * x0**2 - 1 - math.log(1 - ab))
    torch.testing.assert_close(prior_bpd(process, x0), mean_flat(expected) / math.log(2), rtol=1e-10, atol=0)
    ve = VEProcess(geometric_sigmas(10, 0.01, 5.0))  # prior N(0, (1 + sigma_max^2) I)
    v = 1 + 25.0
    expected_ve = 0.5 * (math.log(v / 25.0) + 25.0 / v + x0**2 / v - 1)
    torch.testing.assert_close(prior_bpd(ve, x0), mean_flat(expected_ve) / math.log(2), rtol=1e-10, atol=0)


# ----- L_simple, L_vlb, L_hybrid -----------------------------------------------------------------------

class OracleNet(nn.Module):
    """Outputs the exact target of a parameterisation, by knowing x0 (reads t back from the model time)."""

    def __init__(self, process, x0, parameterization, extra_channels=0):
        super().__init__()
        self.process, self.x0, self.kind, self.extra = process, x0, parameterization, extra_channels
        self.var = nn.Parameter(torch.zeros(x0.shape[0], extra_channels, *x0.shape[2:])) if extra_channels else None

    def forward(self, x, t_model, y=None):
        t = t_model.round().long()
        p = self.process
        eps = (x - bcast(p.a(t), x) * self.x0) / bcast(p.std(t), x)
        out = simple_target(p, self.kind, self.x0, x, t, eps)
        return out if self.var is None else torch.cat([out, self.var], dim=1)


class Conv(nn.Module):
    """A 1x1 convolution with the (x, t, y) signature, deterministically initialised."""

    def __init__(self, seed):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(0.5 * torch.randn(3, 3, 1, 1, generator=_gen(seed)))

    def forward(self, x, t_model, y=None):
        return self.conv(x) + 0.05 * t_model.reshape(-1, 1, 1, 1)


class ZeroNet(nn.Module):
    def forward(self, x, t_model, y=None):
        return torch.zeros_like(x)


@pytest.mark.parametrize("param", ["eps", "x0", "v", "mu"])
def test_simple_loss_is_zero_for_the_exact_target_and_matches_closed_form_otherwise(param):
    process = VPProcess(linear_betas(100))
    x0 = _data(4)
    dcfg = DenoiserConfig(parameterization=param)
    loss = DiffusionLoss(LossConfig(type="simple"), process, dcfg)
    assert float(loss(OracleNet(process, x0, param), x0, generator=_gen(5)).abs().max()) < 1e-8
    # zero output: the loss is the mean square of the closed-form target of the replayed draws
    out = loss(ZeroNet(), x0, generator=_gen(6))
    t, _, eps = _draws(loss, _gen(6), x0)
    x_t = process.q_sample(x0, t, eps)
    a, sd = bcast(process.a(t), x0), bcast(process.std(t), x0)
    closed = {
        "eps": eps,
        "x0": x0,
        "v": a * eps - sd * x0,  # VP: sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0
        "mu": process.posterior_mean(x0, x_t, t, t - 1),
    }[param]
    assert float(out.min()) > 0
    torch.testing.assert_close(out, mean_flat(closed**2), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(loss.last.t, t)


def test_vlb_and_hybrid_scaling():
    T = 40
    process = VPProcess(linear_betas(T))
    x0 = _data(7)
    # An imperfect network (it believes in a shifted x0), so L_simple is not zero and the hybrid's mse term is checked.
    net = OracleNet(process, x0 + 0.1 * torch.randn(x0.shape, generator=_gen(10)), "eps", extra_channels=3)
    nn.init.uniform_(net.var, -0.5, 0.5, generator=_gen(8))
    dcfg = DenoiserConfig(var_type="learned_range")
    vlb_loss = DiffusionLoss(LossConfig(type="vlb"), process, dcfg)
    hybrid = DiffusionLoss(LossConfig(type="hybrid"), process, dcfg)
    out_vlb = vlb_loss(net, x0, generator=_gen(9))
    out_hyb = hybrid(net, x0, generator=_gen(9))
    t, _, eps = _draws(vlb_loss, _gen(9), x0)
    x_t = process.q_sample(x0, t, eps)
    ref = vlb_terms(ModelDenoiser(net, process, dcfg, clip_x0=False), x0, x_t, t)
    torch.testing.assert_close(out_vlb.detach(), T * ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(hybrid.last.vlb, ref.detach(), rtol=1e-5, atol=1e-6)
    # L_simple computed here, not read back from the loss: mean over dimensions of (eps - eps_theta(x_t, t))^2.
    eps_hat = ModelDenoiser(net, process, dcfg, clip_x0=False)(x_t, t).eps
    mse = (eps - eps_hat).pow(2).flatten(1).mean(1).detach()
    assert mse.min() > 0
    torch.testing.assert_close(hybrid.last.mse, mse, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_hyb.detach(), mse + 0.001 * T * ref.detach(), rtol=1e-5, atol=1e-6)


class ParamNet(nn.Module):
    """Returns a parameter tensor (B, 2C, ...) as the output, so d loss / d output is the parameter's gradient."""

    def __init__(self, shape, seed):
        super().__init__()
        b, c, *rest = shape
        self.out = nn.Parameter(0.3 * torch.randn(b, 2 * c, *rest, generator=_gen(seed)))

    def forward(self, x, t_model, y=None):
        return self.out


def test_hybrid_stops_the_vlb_gradient_at_the_mean():
    process = VPProcess(linear_betas(50))
    x0 = _data(10)
    C = x0.shape[1]
    dcfg = DenoiserConfig(var_type="learned_range")
    grads = {}
    for kind in ("hybrid", "vlb"):
        net = ParamNet(x0.shape, seed=11)
        loss = DiffusionLoss(LossConfig(type=kind), process, dcfg)
        loss(net, x0, generator=_gen(12)).sum().backward()
        grads[kind] = net.out.grad
    # d L_simple / d mean channels, by hand, for the same draws
    t, _, eps = _draws(loss, _gen(12), x0)
    net = ParamNet(x0.shape, seed=11)
    mean_out = net.out[:, :C].detach().requires_grad_(True)
    mean_flat((mean_out - eps) ** 2).sum().backward()
    torch.testing.assert_close(grads["hybrid"][:, :C], mean_out.grad, rtol=1e-6, atol=1e-9)  # the vlb adds nothing to the mean
    assert float(grads["hybrid"][:, C:].abs().min()) > 0  # the variance channels learn from the vlb
    assert float((grads["vlb"][:, :C]).abs().max()) > 0  # without the stop-gradient the bound does move the mean


def test_ve_simple_eps_loss_is_sigma_squared_weighted_dsm():
    process = VEProcess(geometric_sigmas(10, 0.01, 5.0))
    x0 = _data(13)
    net = Conv(seed=13)
    dcfg = DenoiserConfig(parameterization="eps", clip_x0=False)
    loss = DiffusionLoss(LossConfig(type="simple"), process, dcfg)
    out = loss(net, x0, generator=_gen(14))
    t, _, eps = _draws(loss, _gen(14), x0)
    sigma = bcast(process.sigma(t), x0)
    x_t = x0 + sigma * eps
    score = ModelDenoiser(net, process, dcfg)(x_t, t).score  # s_theta(x_t, sigma) = -eps_theta / sigma
    # Song & Ermon 2019, Eq. 2 with lambda(sigma) = sigma^2: the target score of q(x_t|x_0) is -(x_t - x_0) / sigma^2
    dsm = mean_flat(sigma**2 * (score + (x_t - x0) / sigma**2) ** 2)
    assert float(out.detach().min()) > 0
    torch.testing.assert_close(out, dsm, rtol=1e-4, atol=1e-6)


# ----- timestep sampling -------------------------------------------------------------------------------

def test_loss_second_moment_sampler_warmup_probabilities_and_weights():
    T, H = 5, 3
    s = LossSecondMomentTimesteps(T, history=H, uniform_prob=0.001)
    for t in range(T - 1):
        s.update(torch.tensor([t] * H), torch.full((H,), float(t + 1)))
    s.update(torch.tensor([T - 1] * (H - 1)), torch.ones(H - 1))
    assert not s.warmed_up()
    torch.testing.assert_close(s.probs(), torch.full((T,), 1 / T, dtype=torch.float64))
    t, w = s.sample(100, _gen(0))
    assert torch.equal(w, torch.ones(100, dtype=torch.float64))
    s.update(torch.tensor([T - 1]), torch.tensor([7.0]))
    assert s.warmed_up()
    hist = s.loss_history
    rms = hist.pow(2).mean(1).sqrt()
    expected = 0.999 * rms / rms.sum() + 0.001 / T
    torch.testing.assert_close(s.probs(), expected)
    assert torch.allclose(rms[-1], torch.tensor((1 + 1 + 49) / 3, dtype=torch.float64).sqrt())
    t, w = s.sample(1000, _gen(1))
    torch.testing.assert_close(w, 1 / (T * expected[t]))
    # importance weights keep the mean unbiased: E_p[w L] = mean_t L_t
    assert float((expected * (1 / (T * expected)) * rms).sum()) == pytest.approx(float(rms.mean()))
    # a full row drops its oldest value
    s.update(torch.tensor([0]), torch.tensor([10.0]))
    assert s.loss_history[0].tolist() == [1.0, 1.0, 10.0] and int(s.loss_counts[0]) == H


def test_loss_aware_state_round_trip_gives_bit_identical_resume():
    process = VPProcess(linear_betas(8))
    x0 = _data(15)
    cfg = LossConfig(timestep_sampling="loss_aware", loss_history=2)
    net = Conv(seed=16)
    g = _gen(16)
    a = DiffusionLoss(cfg, process, DenoiserConfig(), generator=g)
    assert a.needs_update
    for _ in range(12):
        out = a(net, x0)
        torch.testing.assert_close(out.detach(), a.last.loss * a.last.weights.float())
        a.update(a.last.t, a.last.loss)
    assert a.sampler.warmed_up()
    state = a.state_dict()
    assert set(state) == {"loss_history", "loss_counts"} and all(isinstance(v, torch.Tensor) for v in state.values())
    rng = g.get_state()
    b = DiffusionLoss(cfg, process, DenoiserConfig(), generator=torch.Generator().manual_seed(999))
    b.load_state_dict({k: v.clone() for k, v in state.items()})
    b.generator.set_state(rng)
    out_a, out_b = a(net, x0), b(net, x0)
    assert torch.equal(a.last.t, b.last.t) and torch.equal(out_a, out_b)
    assert not torch.equal(a.last.weights, torch.ones_like(a.last.weights))


def test_uniform_sampler_and_per_call_generator():
    s = UniformTimesteps(7)
    t, w = s.sample(500, _gen(0))
    assert t.min() >= 0 and t.max() <= 6 and torch.equal(w, torch.ones(500, dtype=torch.float64))
    assert s.state_dict() == {}
    process = VPProcess(linear_betas(10))
    loss = DiffusionLoss(LossConfig(), process, DenoiserConfig(), generator=_gen(1))
    x0, net = _data(17), ZeroNet()
    assert not loss.needs_update
    assert torch.equal(loss(net, x0, generator=_gen(2)), loss(net, x0, generator=_gen(2)))


# ----- config ------------------------------------------------------------------------------------------

def test_config_validation():
    with pytest.raises(UserError, match="'simple', 'vlb', 'hybrid'"):
        from_dict(LossConfig, {"type": "mse"})
    with pytest.raises(UserError, match="'uniform', 'loss_aware'"):
        from_dict(LossConfig, {"timestep_sampling": "importance"})
    with pytest.raises(UserError, match="vlb_weight"):
        LossConfig(vlb_weight=-1.0)
    process = VPProcess(linear_betas(10))
    with pytest.raises(UserError, match="learned_range"):
        DiffusionLoss(LossConfig(type="hybrid"), process, DenoiserConfig(var_type="fixed_small"))
    with pytest.raises(UserError, match="hybrid"):
        DiffusionLoss(LossConfig(type="simple"), process, DenoiserConfig(var_type="learned_range"))
    with pytest.raises(UserError, match="VP"):
        DiffusionLoss(LossConfig(), VEProcess(geometric_sigmas(5, 0.01, 1.0)), DenoiserConfig(parameterization="mu"))


def test_draw_for_the_global_batch_then_compute_on_slices_matches_one_call():
    process = VPProcess(linear_betas(12))
    x0 = _data(18)
    cfg = LossConfig(type="hybrid", timestep_sampling="loss_aware", loss_history=1)
    loss = DiffusionLoss(cfg, process, DenoiserConfig(var_type="learned_range"))
    net = ParamNet(x0.shape, seed=19)

    class Half(nn.Module):  # the same per-example outputs for a slice of the batch
        def __init__(self, sl):
            super().__init__()
            self.sl = sl

        def forward(self, x, t_model, y=None):
            return net.out[self.sl]

    full = loss(net, x0, generator=_gen(20))
    draws = loss.draw(x0.shape[0], tuple(x0.shape[1:]), _gen(20))
    assert set(draws) == {"t", "weights", "eps"} and all(v.shape[0] == x0.shape[0] for v in draws.values())
    parts = []
    for sl in (slice(0, 2), slice(2, 6)):
        parts.append(loss.compute(Half(sl), x0[sl], None, **{k: v[sl] for k, v in draws.items()}))
    torch.testing.assert_close(torch.cat(parts), full, rtol=1e-6, atol=1e-7)
    assert loss.last.t.shape == (4,) and loss.last.mse is not None and loss.last.vlb is not None
