"""The probability-flow ODE likelihood (Song et al. 2021, App. D.2): exact against Gaussian-mixture densities, the
Hutchinson estimator unbiased, a closed form through ModelDenoiser, `difflab nll --method ode` end to end, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from conftest import cli, one_line_error, tiny_overrides
from difflab.cli.main import main
from difflab.denoiser import DenoiserConfig, ModelDenoiser
from difflab.errors import UserError
from difflab.eval.ode_likelihood import gaussian_log_prob, ode_bits_per_dim, ode_log_likelihood
from difflab.oracle import GMMOracle, ring_mixture
from difflab.process import ProcessConfig, build_process


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class DifferentiableOracle(GMMOracle):
    """GMMOracle whose at_sigma keeps the graph to x_hat (GMMOracle detaches its input), for div eps by autograd."""

    def at_sigma(self, x_hat, sigma, y=None):
        b = x_hat.shape[0]
        flat = x_hat.double().reshape(b, -1)
        sig = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).expand(b)
        eps = self.mixture.eps_hat(flat, sig, self._log_w(y, b))
        return (flat - sig[:, None] * eps).reshape(x_hat.shape), eps.reshape(x_hat.shape)


VP = build_process(ProcessConfig(kind="vp", T=1000))  # linear betas: sigma 0.0100 ... 157.4
VE = build_process(ProcessConfig(kind="ve", T=1000))  # geometric: sigma 0.01 ... 50


def gaussian_4d(process) -> DifferentiableOracle:
    """One Gaussian component in d = 4 with a full covariance and a non-zero mean."""
    g = torch.Generator().manual_seed(1)
    a = 0.3 * torch.randn(4, 4, generator=g, dtype=torch.float64)
    cov = a @ a.T + 0.05 * torch.eye(4, dtype=torch.float64)
    return DifferentiableOracle(process, torch.tensor([[0.3, -0.2, 0.1, 0.5]], dtype=torch.float64), cov[None], torch.ones(1))


def check_exact(oracle, x, sigma_min, tol_data, tol_flow, tol_prior):
    """ODE log p vs the true densities: the data (up to sigma_min and the prior), p_{sigma_min} given the true prior."""
    r = ode_log_likelihood(oracle, x, rtol=1e-6, atol=1e-6, hutchinson="exact", sigma_min=sigma_min)
    true_prior = oracle.mixture.log_prob(r["x_hat_max"], r["sigma_max"])  # the exact p_{sigma_max}
    # The flow itself: with the exact prior, the ODE recovers p_{sigma_min} to the solver's tolerance.
    assert (true_prior + r["delta_logp"] - oracle.mixture.log_prob(x, r["sigma_min"])).abs().max() < tol_flow
    # The Gaussian prior's mismatch with the true marginal at sigma_max: O(|mean of the data| / sigma_max).
    assert (r["prior_logp"] - true_prior).abs().max() < tol_prior
    assert (r["logp"] - oracle.log_prob(x)).abs().max() < tol_data
    return r


def test_ring_2d_vp_equals_the_data_log_density():
    oracle = DifferentiableOracle.from_mixture(VP, ring_mixture())
    x = oracle.sample_data(8, torch.Generator().manual_seed(0))
    # sigma_min 1e-3: log p_{1e-3} differs from log p_0 by < 3e-4 here; the VP prior N(0, I) costs 7e-4 nats.
    r = check_exact(oracle, x, 1e-3, tol_data=2e-3, tol_flow=2e-5, tol_prior=1.5e-3)
    assert r["sigma_max"] == pytest.approx(157.4, abs=0.1) and r["nfe"] < 600
    # By default the ODE starts at the process's smallest noise level sigma_0 = 0.0100 and gives log p_{sigma_0}.
    r0 = ode_log_likelihood(oracle, x, rtol=1e-6, atol=1e-6, hutchinson="exact")
    assert r0["sigma_min"] == pytest.approx(VP.sigma(torch.tensor([0])).item())
    assert (r0["logp"] - oracle.mixture.log_prob(x, r0["sigma_min"])).abs().max() < 2e-3
    assert (r0["logp"] - oracle.log_prob(x)).abs().max() > 1e-2  # sigma_0 = 0.01 is visible next to std 0.04


@pytest.mark.parametrize("process", [VP, VE], ids=["vp", "ve"])
def test_gaussian_4d_equals_the_data_log_density(process):
    oracle = gaussian_4d(process)
    x = oracle.sample_data(6, torch.Generator().manual_seed(2))
    x[0] = torch.tensor([1.5, -1.0, 0.8, -0.7], dtype=torch.float64)  # a point far in the tail too
    # the prior mismatch is 0.007 nats (VP, sigma_max 157) and 0.014 (VE, sigma_max 50) at these points
    check_exact(oracle, x, 1e-3, tol_data=3e-2, tol_flow=1e-4, tol_prior=3e-2)


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(kind):
    """Mean over 256 probes (one per copy of each point) matches the exact divergence within 4 standard errors."""
    oracle = DifferentiableOracle.from_mixture(VP, ring_mixture())
    x = oracle.sample_data(2, torch.Generator().manual_seed(5))
    exact = ode_log_likelihood(oracle, x, rtol=1e-6, atol=1e-6, hutchinson="exact")["logp"]
    n = 256
    r = ode_log_likelihood(oracle, x.repeat_interleave(n, 0), rtol=1e-6, atol=1e-6, hutchinson=kind,
                           generator=torch.Generator().manual_seed(3))
    lp = r["logp"].reshape(2, n)
    se = lp.std(1) / math.sqrt(n)
    assert bool((se > 0).all())
    assert ((lp.mean(1) - exact).abs() < 4 * se + 1e-4).all(), (lp.mean(1), exact, se)


def test_hutchinson_is_reproducible_with_a_generator():
    oracle = DifferentiableOracle.from_mixture(VP, ring_mixture())
    x = oracle.sample_data(4, torch.Generator().manual_seed(0))
    a, b = (ode_log_likelihood(oracle, x, rtol=1e-4, atol=1e-4, generator=torch.Generator().manual_seed(7))["logp"]
            for _ in range(2))
    assert torch.equal(a, b)


class Scale(nn.Module):
    """eps = c x_t, with x_t = x_hat / sqrt(1 + sigma^2) under VP: the flow is x_hat(sigma) = x e^{c (asinh sigma - asinh sigma_min)}
    and div_x_hat eps = c d / sqrt(1 + sigma^2), whose integral is c d (asinh sigma_max - asinh sigma_min)."""

    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def forward(self, x, t, y=None):
        return self.c * x


def test_model_denoiser_closed_form_vp():
    """Gradients flow through ModelDenoiser.at_sigma; Rademacher probes are exact for a diagonal Jacobian."""
    c = 0.2
    den = ModelDenoiser(Scale(c), VP, DenoiserConfig(clip_x0=False))
    x = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s0, s1, d = VP.sigma(torch.tensor([0])).item(), VP.sigma(torch.tensor([VP.T - 1])).item(), 4
    growth = c * (math.asinh(s1) - math.asinh(s0))
    expected = gaussian_log_prob(x * math.exp(growth), 1 + s1**2) + d * growth
    for kind in ("exact", "rademacher"):
        r = ode_log_likelihood(den, x, rtol=1e-8, atol=1e-8, hutchinson=kind, generator=torch.Generator().manual_seed(0))
        assert r["sigma_min"] == pytest.approx(s0) and r["sigma_max"] == pytest.approx(s1)
        assert torch.allclose(r["logp"], expected, rtol=0, atol=1e-6), (r["logp"], expected)


def test_bits_per_dim_convention():
    """bits/dim = -(log p(x + u) - D log 127.5) / (D ln 2), u ~ U(-1/255, 1/255)^D: 'continuous' + log2(127.5)."""
    oracle = DifferentiableOracle.from_mixture(VP, ring_mixture())
    x = oracle.sample_data(6, torch.Generator().manual_seed(0))
    res = ode_bits_per_dim(oracle, x, rtol=1e-5, atol=1e-5, hutchinson="exact", batch_size=4,
                           generator=torch.Generator().manual_seed(0))
    assert res["bits_per_dim"] - res["continuous_bpd"] == pytest.approx(math.log2(127.5))
    assert len(res["nfe"]) == 2 and res["per_example_bpd"].shape == (6,)
    # the dequantisation noise is drawn first, from the generator: reproduce it and the ODE's log p
    u = (torch.rand(x[:4].shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 0.5) * (2 / 255)
    lp = ode_log_likelihood(oracle, x[:4] + u, rtol=1e-5, atol=1e-5, hutchinson="exact")["logp"]
    expect = -(lp - 2 * math.log(127.5)) / (2 * math.log(2))
    assert torch.allclose(res["per_example_bpd"][:4], expect, atol=1e-9)


def test_library_bad_input():
    oracle = DifferentiableOracle.from_mixture(VP, ring_mixture())
    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(UserError, match="rtol"):
        ode_log_likelihood(oracle, x, rtol=0.0)
    with pytest.raises(UserError, match="rademacher, gaussian, exact"):
        ode_log_likelihood(oracle, x, hutchinson="sobol")
    with pytest.raises(UserError, match="not differentiable"):  # the plain oracle detaches x_hat
        ode_log_likelihood(GMMOracle.from_mixture(VP, ring_mixture()), x, rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------------- difflab nll --method ode


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r"
    sets = [a for s in tiny_overrides(steps=2) for a in ("--set", s)]
    assert main(["train", "--config", "digits", "--out", str(out), "--quiet", *sets]) == 0
    return out


def test_nll_ode_on_a_tiny_run(tmp_path, capsys, run_dir):
    out = tmp_path / "nll.json"
    code, stdout, err = cli(["nll", "--run", run_dir, "--method", "ode", "--n", 3, "--batch-size", 2, "--rtol", 1e-3,
                             "--atol", 1e-3, "--quiet", "--out", out], capsys)
    assert code == 0, err
    res = json.loads(out.read_text())
    assert res["method"] == "ode" and res["n"] == 3 and res["T"] == 50 and res["hutchinson"] == "rademacher"
    assert math.isfinite(res["bits_per_dim"]) and math.isfinite(res["bits_per_dim_se"])
    assert res["bits_per_dim"] - res["continuous_bpd"] == pytest.approx(math.log2(127.5))
    assert len(res["nfe"]) == 2 and res["nfe_mean"] > 0 and len(res["per_example_bpd"]) == 3
    assert "bits/dim" in stdout and "mean NFE" in stdout


@pytest.mark.parametrize("args, message", [
    (["--rtol", 0], "--rtol and --atol must be positive"),
    (["--atol=-1e-5"], "--rtol and --atol must be positive"),
    (["--hutchinson", "sobol"], "valid: rademacher, gaussian, exact"),
])
def test_nll_ode_bad_input(capsys, run_dir, args, message):
    code, _, err = cli(["nll", "--run", run_dir, "--method", "ode", "--quiet", *args], capsys)
    assert message in one_line_error(code, err)
