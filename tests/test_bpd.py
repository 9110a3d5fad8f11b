"""bits_per_dim of an exact model on Gaussian data equals the bound computed independently in closed form.

Data x_0 ~ N(m, s^2 I). (x_0, x_t) is jointly Gaussian, so the exact denoiser's E[x_0|x_t] is linear
in x_t and Var(x_0|x_t) is known. The model p(x_{t-1}|x_t) = N(mu_tilde(x_t, E[x_0|x_t]), v_p) with a
fixed v_p then has E[L_t] = KL of two Gaussians with the same variance structure, averaged in closed form:
  E[L_t] = 1/2 (log(v_p/v_q) + v_q/v_p - 1 + c_t^2 Var(x_0|x_t) / v_p),  c_t = posterior coefficient of x_0.
The decoder term is a 2-D integral (over x_0 and the noise of x_1) done with scipy quadrature.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from difflab.denoiser import DenoiserConfig, ModelDenoiser, as_timesteps, bcast, complete_prediction
from difflab.losses import bits_per_dim
from difflab.process import VPProcess, linear_betas

LN2 = math.log(2.0)
DELTA = 1.0 / 255.0


class ExactGaussianDenoiser:
    """Exact posterior-mean denoiser for x_0 ~ N(m, s^2 I) on a VP process, with a fixed reverse variance."""

    def __init__(self, process, m: float, s: float, var_type: str = "fixed_small"):
        self.process, self.m, self.s, self.var_type = process, m, s, var_type

    def __call__(self, x, t, y=None, s=None):
        p = self.process
        t = as_timesteps(t, x.shape[0])
        s_ = t - 1 if s is None else as_timesteps(s, x.shape[0])
        a, std = bcast(p.a(t), x), bcast(p.std(t), x)
        gain = a * self.s**2 / (a**2 * self.s**2 + std**2)  # Cov(x0, x_t) / Var(x_t)
        x0 = self.m + gain * (x - a * self.m)
        eps = p.eps_from_x0(x, t, x0)
        log_var = None  # fixed_small: the clipped posterior variance
        if self.var_type == "fixed_large":
            large = p.transition_var(t, s_)
            large = torch.where(s_ < 0, p.posterior_var(torch.ones_like(t), torch.zeros_like(t)), large)
            log_var = bcast(large.log(), x).expand_as(x)
        return complete_prediction(p, x, t, s_, x0, eps, log_var)


def _scalar(v: torch.Tensor) -> float:
    return float(v.reshape(-1)[0])


def analytic_terms(process, m: float, s: float, var_type: str) -> tuple[np.ndarray, float]:
    """(E[L_t] for t = 0..T-1 in bits/dim, E[L_T] in bits/dim), computed without difflab's loss code."""
    T = process.T
    terms = np.zeros(T)
    for t in range(1, T):
        tt, ss = torch.tensor([t]), torch.tensor([t - 1])
        a, std = _scalar(process.a(tt)), _scalar(process.std(tt))
        a_s, sig_s, sig_t = _scalar(process.a(ss)), _scalar(process.sigma(ss)), _scalar(process.sigma(tt))
        # q(x_{t-1}|x_t,x_0): mean coefficient of x_0 and variance, from the a/sigma form directly.
        c_xt = a_s * sig_s**2 / (a * sig_t**2)
        c_x0 = a_s - c_xt * a
        v_q = a_s**2 * sig_s**2 * (sig_t**2 - sig_s**2) / sig_t**2
        v_p = v_q if var_type == "fixed_small" else a**2 * (sig_t**2 - sig_s**2)
        post_var_x0 = s**2 * std**2 / (a**2 * s**2 + std**2)
        terms[t] = 0.5 * (math.log(v_p / v_q) + v_q / v_p - 1 + c_x0**2 * post_var_x0 / v_p) / LN2
    terms[0] = _decoder_term(process, m, s)
    aT, stdT = _scalar(process.a(torch.tensor([T - 1]))), _scalar(process.std(torch.tensor([T - 1])))
    prior = 0.5 * (stdT**2 + aT**2 * (m**2 + s**2) - 1 - math.log(stdT**2)) / LN2
    return terms, prior


def _decoder_term(process, m: float, s: float) -> float:
    """E[-log P(bin of x_0 | x_1)] / ln 2 by quadrature: x_0 ~ N(m, s^2), x_1 = a x_0 + std z, decoder N(E[x_0|x_1], beta_tilde_1)."""
    a, std = _scalar(process.a(torch.tensor([0]))), _scalar(process.std(torch.tensor([0])))
    # The decoder variance at t = 0 is the clipped posterior variance beta_tilde of the step 1 -> 0.
    a0 = a
    sig1, sig0 = _scalar(process.sigma(torch.tensor([1]))), _scalar(process.sigma(torch.tensor([0])))
    sd_p = math.sqrt(a0**2 * sig0**2 * (sig1**2 - sig0**2) / sig1**2)
    gain = a * s**2 / (a**2 * s**2 + std**2)
    z, wz = np.polynomial.hermite_e.hermegauss(80)
    wz = wz / wz.sum()

    def nll_given_x0(x0: float, edge: str) -> float:
        mu = m + gain * (a * x0 + std * z - a * m)
        lo, hi = (x0 - DELTA - mu) / sd_p, (x0 + DELTA - mu) / sd_p
        if edge == "left":
            logp = stats.norm.logcdf(hi)
        elif edge == "right":
            logp = stats.norm.logsf(lo)
        else:
            mass = np.where(lo + hi > 0, stats.norm.sf(lo) - stats.norm.sf(hi), stats.norm.cdf(hi) - stats.norm.cdf(lo))
            logp = np.log(mass)
        return float(-(wz * logp).sum()) * stats.norm.pdf(x0, m, s)

    parts = [(-np.inf, -0.999, "left"), (-0.999, 0.999, "mid"), (0.999, np.inf, "right")]
    total = sum(integrate.quad(nll_given_x0, lo, hi, args=(edge,), limit=200, epsabs=1e-10, epsrel=1e-10)[0] for lo, hi, edge in parts)
    return total / LN2


PROCESSES = {
    "linear": lambda T: VPProcess(linear_betas(T)),  # alpha_bar_T ~ 0: prior term ~ 0
    "constant_beta": lambda T: VPProcess(torch.full((T,), 0.03, dtype=torch.float64)),  # alpha_bar_T ~ 0.54: a real prior term
}


@pytest.mark.parametrize("schedule", sorted(PROCESSES))
@pytest.mark.parametrize("var_type", ["fixed_small", "fixed_large"])
def test_bits_per_dim_of_exact_gaussian_model_matches_closed_form(var_type, schedule):
    m, s, T, N, D = 0.2, 0.35, 20, 4000, 2
    process = PROCESSES[schedule](T)
    g = torch.Generator().manual_seed(0)
    x0 = m + s * torch.randn(N, D, generator=g, dtype=torch.float64)
    out = bits_per_dim(ExactGaussianDenoiser(process, m, s, var_type), x0, generator=g, batch_size=1000)

    terms, prior = analytic_terms(process, m, s, var_type)
    expected = terms.sum() + prior
    assert abs(out["total_bpd"] - expected) < 4 * out["total_bpd_se"], (out["total_bpd"], expected, out["total_bpd_se"])
    assert out["total_bpd_se"] < 0.02 * abs(expected)  # the comparison has teeth
    vb, vb_se = out["vb_per_t"].numpy(), out["vb_per_t_se"].numpy()
    assert vb.shape == (T,)
    np.testing.assert_array_less(np.abs(vb - terms), 4 * vb_se + 1e-12)
    assert abs(out["prior_bpd"] - prior) < 0.02 * prior + 1e-9
    assert out["per_example_bpd"].shape == (N,)
    assert out["x0_mse_per_t"].shape == (T,) and out["eps_mse_per_t"].shape == (T,)
    # Exact model: x0-MSE at step t is the posterior variance Var(x0|x_t), which grows with t towards s^2.
    assert out["x0_mse_per_t"][0] < out["x0_mse_per_t"][-1] <= 1.1 * s**2


def test_bits_per_dim_detects_a_wrong_model():
    m, s, T, N, D = 0.2, 0.35, 20, 2000, 2
    process = VPProcess(linear_betas(T))
    x0 = m + s * torch.randn(N, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = bits_per_dim(ExactGaussianDenoiser(process, m, s), x0, generator=torch.Generator().manual_seed(2), batch_size=500)
    wrong = bits_per_dim(ExactGaussianDenoiser(process, m, 0.5 * s), x0, generator=torch.Generator().manual_seed(2), batch_size=500)
    assert wrong["total_bpd"] > exact["total_bpd"] + 10 * exact["total_bpd_se"]


class _TinyNet(torch.nn.Module):
    """(x, t, y) -> 2C channels: a 1x1 convolution plus a label embedding, for a learned_range ModelDenoiser."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.w = torch.nn.Parameter(0.1 * torch.randn(6, 3, 1, 1, generator=g))
        self.emb = torch.nn.Parameter(0.1 * torch.randn(4, 6, generator=g))

    def forward(self, x, t_model, y=None):
        out = torch.nn.functional.conv2d(x, self.w) + 0.001 * t_model.reshape(-1, 1, 1, 1)
        return out if y is None else out + self.emb[y][:, :, None, None]


def test_bits_per_dim_runs_on_a_model_denoiser_with_labels_and_is_reproducible():
    process = VPProcess(linear_betas(10))
    den = ModelDenoiser(_TinyNet(), process, DenoiserConfig(var_type="learned_range"))
    levels = torch.linspace(-1, 1, 256)
    x0 = levels[torch.randint(0, 256, (5, 3, 4, 4), generator=torch.Generator().manual_seed(4))]
    y = torch.tensor([0, 1, 2, 3, 0])
    a = bits_per_dim(den, x0, y, generator=torch.Generator().manual_seed(5), batch_size=2)
    b = bits_per_dim(den, x0, y, generator=torch.Generator().manual_seed(5), batch_size=2)
    assert math.isfinite(a["total_bpd"]) and a["total_bpd"] > 0
    assert a["total_bpd"] == b["total_bpd"]
    assert a["total_bpd"] == pytest.approx(float(a["vb_per_t"].sum()) + a["prior_bpd"], rel=1e-12)
    assert a["per_example_bpd"].shape == (5,) and a["vb_per_t"].shape == (10,)
