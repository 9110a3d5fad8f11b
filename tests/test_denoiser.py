"""The denoiser returns consistent x0 / eps / v / mu / score predictions, whatever the network predicts."""

import math

import pytest
import torch
from torch import nn

from difflab.denoiser import DenoiserConfig, ModelDenoiser
from difflab.process import ProcessConfig, build_process
from difflab.samplers import ddim, ddim_step, ddpm

torch.set_default_dtype(torch.float32)


class TargetNet(nn.Module):
    """Outputs a fixed tensor: lets a test put the true eps/x0/v/mu in the network's mouth."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x, t, y=None):
        return self.out


@pytest.fixture
def setup():
    p = build_process(ProcessConfig(T=100))
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(6, 2, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(6, 2, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 10, 50, 90, 99])
    xt = p.q_sample(x0, t, eps)
    return p, x0, eps, t, xt


@pytest.mark.parametrize("param", ["eps", "x0", "v", "mu"])
def test_every_parameterisation_recovers_x0_eps_score(setup, param):
    p, x0, eps, t, xt = setup
    a = p.alpha_bar[t].reshape(-1, 1, 1, 1)
    targets = {
        "eps": eps,
        "x0": x0,
        "v": a.sqrt() * eps - (1 - a).sqrt() * x0,  # Salimans & Ho 2022
        "mu": p.posterior_mean(x0, xt, t, t - 1),
    }
    d = ModelDenoiser(TargetNet(targets[param]), p, DenoiserConfig(parameterization=param, clip_x0=False))
    pred = d(xt, t)
    assert torch.allclose(pred.x0, x0, atol=1e-8)
    # mu-prediction inverts a posterior coefficient that grows as 1/beta_t: a looser tolerance.
    assert torch.allclose(pred.eps, eps, atol=1e-6 if param == "mu" else 1e-8)
    # score = -eps / sqrt(1 - alpha_bar)
    assert torch.allclose(pred.score, -pred.eps / (1 - a).sqrt())
    # reverse mean = posterior mean with the true x0 (Ho et al. Eq. 7)
    assert torch.allclose(pred.mean, p.posterior_mean(x0, xt, t, t - 1), atol=1e-8)


def test_v_target_closed_form(setup):
    p, x0, eps, t, xt = setup
    a = p.alpha_bar[t].reshape(-1, 1, 1, 1)
    assert torch.allclose(p.v_target(x0, t, eps), a.sqrt() * eps - (1 - a).sqrt() * x0)


def test_fixed_and_learned_variances(setup):
    p, x0, eps, t, xt = setup
    small = ModelDenoiser(TargetNet(eps), p, DenoiserConfig(var_type="fixed_small"))(xt, t)
    large = ModelDenoiser(TargetNet(eps), p, DenoiserConfig(var_type="fixed_large"))(xt, t)
    tt = t[t > 0]
    assert torch.allclose(small.log_var[t > 0][:, 0, 0, 0], p.beta_tilde[tt].log())
    assert torch.allclose(large.log_var[t > 0][:, 0, 0, 0], p.betas[tt].log())
    # learned_range: v = +1 -> log beta_t, v = -1 -> log beta_tilde_t (clipped) (Nichol & Dhariwal Eq. 15) at every t;
    # unlike fixed_large, the final step keeps beta_1 as its upper end (beta_tilde_1 is only fixed_large's stand-in).
    for v, ref in ((1.0, p.betas[t].log()), (-1.0, small.log_var[:, 0, 0, 0])):
        out = torch.cat([eps, torch.full_like(eps, v)], 1)
        lr = ModelDenoiser(TargetNet(out), p, DenoiserConfig(var_type="learned_range"))(xt, t)
        assert torch.allclose(lr.log_var, ref.view(-1, 1, 1, 1).expand_as(lr.log_var))
    assert (t == 0).any()  # the case that differs between fixed_large and learned_range is covered
    out = torch.cat([eps, torch.full_like(eps, -3.0)], 1)
    learned = ModelDenoiser(TargetNet(out), p, DenoiserConfig(var_type="learned"))(xt, t)
    assert torch.all(learned.log_var == -3.0)


def test_clipping_keeps_x0_in_range_and_eps_consistent(setup):
    p, x0, eps, t, xt = setup
    d = ModelDenoiser(TargetNet(eps * 5), p, DenoiserConfig(clip_x0=True))
    pred = d(xt, t)
    assert pred.x0.abs().max() <= 1
    assert torch.allclose(p.q_sample(pred.x0, t, pred.eps), xt, atol=1e-8)


def test_ddim_eta1_takes_the_ddpm_step_distribution(setup):
    """DDIM with eta = 1 and the DDPM sigma has the mean and variance of ancestral DDPM (fixed small)."""
    p, x0, eps, t, xt = setup
    d = ModelDenoiser(TargetNet(eps), p, DenoiserConfig(clip_x0=False))
    tt = torch.full((6,), 60)
    ss = torch.full((6,), 40)  # a skipped step: the respaced chain
    pred = d(xt, tt, s=ss)
    zero = torch.zeros_like(xt)
    mean_ddim = ddim_step(p, pred.x0, pred.eps, tt, ss, 1.0, zero)
    assert torch.allclose(mean_ddim, pred.mean, atol=1e-10)
    one = torch.ones_like(xt)
    std_ddim = ddim_step(p, pred.x0, pred.eps, tt, ss, 1.0, one) - mean_ddim
    assert torch.allclose(std_ddim, (0.5 * pred.log_var).exp(), atol=1e-10)


def test_ddim_eta1_and_ddpm_samplers_agree_in_distribution():
    """Running both samplers end to end from the same x_T gives the same output distribution."""
    p = build_process(ProcessConfig(T=50))

    class Shrink(nn.Module):  # a smooth stand-in network
        def forward(self, x, t, y=None):
            return 0.5 * x

    d = ModelDenoiser(Shrink(), p, DenoiserConfig(clip_x0=False))
    steps = list(range(49, -1, -7))
    xT = torch.randn(1, 1, 1, 1).expand(20000, 1, 1, 1).contiguous()
    a = ddpm(d, xT, steps, generator=torch.Generator().manual_seed(0))
    b = ddim(d, xT, steps, eta=1.0, generator=torch.Generator().manual_seed(1))
    se = a.std().item() / math.sqrt(20000)
    assert abs(a.mean().item() - b.mean().item()) < 5 * math.sqrt(2) * se
    assert a.std().item() == pytest.approx(b.std().item(), rel=0.03)


def test_ddim_eta0_is_deterministic():
    p = build_process(ProcessConfig(T=50))

    class Scale(nn.Module):
        def forward(self, x, t, y=None):
            return 0.3 * x

    d = ModelDenoiser(Scale(), p)
    xT = torch.randn(3, 1, 4, 4)
    assert torch.equal(ddim(d, xT, range(49, -1, -5)), ddim(d, xT, range(49, -1, -5)))


@pytest.mark.parametrize("param", ["eps", "x0", "v"])
def test_at_sigma_equals_the_integer_step_on_the_grid_and_interpolates_between(param):
    """The continuous extension used by ode-rk45 and likelihoods agrees with the discrete denoiser on its grid."""
    p = build_process(ProcessConfig(T=100))

    class TimeNet(nn.Module):  # depends smoothly on x and on the time input
        def forward(self, x, t, y=None):
            return 0.2 * x * (1 + t.view(-1, 1, 1, 1) / 100) + 0.05

    d = ModelDenoiser(TimeNet(), p, DenoiserConfig(parameterization=param, clip_x0=False))
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    for t in (0, 37, 99):
        tt = torch.full((3,), t)
        pred = d(x, tt)
        x_hat = x / p.a(tt).reshape(-1, 1, 1, 1)
        x0, eps = d.at_sigma(x_hat, p.sigma(tt)[0])
        assert torch.allclose(x0, pred.x0, atol=1e-6) and torch.allclose(eps, pred.eps, atol=1e-6)
    # between grid points the network's time input is interpolated
    sig = (p.sigma(torch.tensor([40])) * p.sigma(torch.tensor([41]))).sqrt()
    assert 40 < p.fractional_t(sig).item() < 41


def test_ve_network_input_is_normalised():
    """For VE the net sees x_t / sqrt(1 + sigma^2) (unit variance), for VP x_t itself."""
    from difflab.process import VEProcess, geometric_sigmas

    seen = {}

    class Spy(nn.Module):
        def forward(self, x, t, y=None):
            seen["x"] = x
            return torch.zeros_like(x)

    p = VEProcess(geometric_sigmas(10, 0.01, 50.0))
    x = torch.full((2, 1, 2, 2), 50.0)
    ModelDenoiser(Spy(), p)(x, torch.tensor([9, 9]))
    assert torch.allclose(seen["x"], x / math.sqrt(1 + 50.0**2))
    vp = build_process(ProcessConfig(T=10))
    ModelDenoiser(Spy(), vp)(x, torch.tensor([9, 9]))
    assert torch.equal(seen["x"], x)
