"""Closed-form checks of the forward process (Ho et al. 2020 Eqs. 2, 4, 6-7; Nichol & Dhariwal 2021 Eq. 17)."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from difflab.errors import UserError
from difflab.process import ProcessConfig, VEProcess, VPProcess, build_process, cosine_betas, geometric_sigmas, linear_betas


def test_linear_schedule_endpoints_and_dtype():
    b = linear_betas(1000)
    assert b.dtype == torch.float64
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    # Other T keeps the total noise comparable (improved DDPM's 1000/T rescaling).
    b100 = linear_betas(100)
    assert b100[0].item() == pytest.approx(1e-3) and b100[-1].item() == pytest.approx(0.2)


def test_cosine_schedule_matches_its_alpha_bar():
    T, s = 1000, 0.008
    p = VPProcess(cosine_betas(T, s))
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    for t in (0, 10, 500, 900):
        # alpha_bar at 0-based index t is the paper's alpha_bar(t+1) = f(t+1)/f(0)
        assert p.alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-12)
    assert cosine_betas(T, s).max().item() == pytest.approx(0.999)


def test_q_sample_moments_equal_iterating_the_one_step_chain():
    """q(x_t|x_0) in closed form has the moments of x_t = sqrt(1-beta) x_{t-1} + sqrt(beta) eps iterated."""
    p = VPProcess(linear_betas(50))
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = torch.full((n,), 0.7, dtype=torch.float64)
    x = x0.clone()
    for t in range(50):
        x = (1 - p.betas[t]).sqrt() * x + p.betas[t].sqrt() * torch.randn(n, generator=g, dtype=torch.float64)
        if t in (0, 9, 49):
            mean, std = p.q_mean_std(x0[:1], torch.tensor([t]))
            se = std.item() / math.sqrt(n)
            assert abs(x.mean().item() - mean.item()) < 5 * se
            assert x.std().item() == pytest.approx(std.item(), rel=0.01)
    # closed form sample has those moments too
    xt = p.q_sample(x0, torch.full((n,), 49), torch.randn(n, generator=g, dtype=torch.float64))
    assert xt.std().item() == pytest.approx(x.std().item(), rel=0.01)


def test_posterior_equals_bayes_rule_numerically():
    """q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0), evaluated on a grid, equals N(mu_tilde, beta_tilde)."""
    p = VPProcess(linear_betas(100))
    x0, xt = 0.3, -0.4
    for t in (1, 20, 99):
        grid = np.linspace(-6, 6, 200_001)
        prior = stats.norm.pdf(grid, math.sqrt(p.alpha_bar[t - 1]) * x0, math.sqrt(1 - p.alpha_bar[t - 1]))
        lik = stats.norm.pdf(xt, math.sqrt(p.alphas[t]) * grid, math.sqrt(p.betas[t]))
        post = prior * lik
        post /= np.trapezoid(post, grid)
        mean = np.trapezoid(grid * post, grid)
        var = np.trapezoid((grid - mean) ** 2 * post, grid)
        tt = torch.tensor([t])
        mu = p.posterior_mean(torch.tensor([[x0]], dtype=torch.float64), torch.tensor([[xt]], dtype=torch.float64), tt, tt - 1)
        assert mu.item() == pytest.approx(mean, rel=1e-6, abs=1e-9)
        assert p.posterior_var(tt, tt - 1).item() == pytest.approx(var, rel=1e-5)
        assert p.posterior_var(tt, tt - 1).item() == pytest.approx(p.beta_tilde[t].item(), rel=1e-12)


def test_posterior_over_skipped_steps_equals_respaced_chain():
    """The step t -> s on the full process equals the one-step posterior of the respaced process."""
    p = VPProcess(linear_betas(1000))
    kept = [0, 250, 500, 750, 999]
    r = p.respace(kept)
    for i in range(1, len(kept)):
        t, s = torch.tensor([kept[i]]), torch.tensor([kept[i - 1]])
        assert p.posterior_var(t, s).item() == pytest.approx(r.beta_tilde[i].item(), rel=1e-10)
        assert p.transition_var(t, s).item() == pytest.approx(r.betas[i].item(), rel=1e-10)
    assert r.model_time(torch.tensor([1, 4])).tolist() == [250.0, 999.0]


def test_sigma_map_and_snr():
    p = VPProcess(linear_betas(1000))
    t = torch.arange(1000)
    ab = p.alpha_bar
    assert torch.allclose(p.sigma(t), ((1 - ab) / ab).sqrt())
    assert torch.allclose(p.snr(t), ab / (1 - ab))
    assert torch.allclose(p.std(t), (1 - ab).sqrt())
    assert p.sigma(torch.tensor([-1])).item() == 0.0 and p.a(torch.tensor([-1])).item() == 1.0


def test_clipped_log_variance_at_t0():
    p = VPProcess(linear_betas(1000))
    t = torch.tensor([0])
    assert p.posterior_log_var_clipped(t, t - 1).item() == pytest.approx(math.log(p.beta_tilde[1].item()))


def test_ve_process():
    sig = geometric_sigmas(10, 0.01, 50.0)
    assert sig[0].item() == pytest.approx(0.01) and sig[-1].item() == pytest.approx(50.0)
    ratios = sig[1:] / sig[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios))
    p = VEProcess(sig)
    x0, eps = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0, 3, 6, 9])
    assert torch.allclose(p.q_sample(x0, t, eps), x0 + sig[t, None] * eps)
    # VE posterior: mean x0 + (s_s^2/s_t^2)(x_t - x0), var s_s^2 (s_t^2 - s_s^2)/s_t^2
    xt = p.q_sample(x0, t[1:2].expand(4), eps)
    mu = p.posterior_mean(x0, xt, torch.full((4,), 3), torch.full((4,), 2))
    r = (sig[2] / sig[3]) ** 2
    assert torch.allclose(mu, x0 + r * (xt - x0))


def test_process_config_validation():
    with pytest.raises(UserError, match="process.T"):
        ProcessConfig(T=1)
    with pytest.raises(UserError, match="beta_start"):
        ProcessConfig(beta_start=0.1, beta_end=0.01)
    assert build_process(ProcessConfig(kind="ve", T=10)).kind == "ve"
    assert build_process(ProcessConfig(schedule="cosine", T=10)).kind == "vp"
