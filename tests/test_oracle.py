"""The Gaussian-mixture oracle is exact (closed forms, autograd score, Tweedie orthogonality) and the distance sees errors."""

import math

import pytest
import torch
from torch import nn

from difflab.denoiser import DenoiserConfig, ModelDenoiser
from difflab.oracle import GaussianMixture, GMMOracle, kl_floor, mixture_distance, random_diagonal_mixture, ring_mixture
from difflab.process import ProcessConfig, build_process

PROCESSES = [ProcessConfig(kind="vp", schedule="linear", T=1000), ProcessConfig(kind="vp", schedule="cosine", T=1000),
             ProcessConfig(kind="ve", T=1000, sigma_max=10.0)]
IDS = ["vp-linear", "vp-cosine", "ve"]


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one thread (conftest.one_thread)


@pytest.fixture(scope="module")
def ring():
    return ring_mixture()


def _noisy(process, mix, n, t, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = mix.sample(n, g)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    tt = torch.full((n,), t)
    return x0, eps, tt, process.q_sample(x0, tt, eps)


@pytest.mark.parametrize("cfg", PROCESSES, ids=IDS)
def test_single_gaussian_posterior_is_the_textbook_formula(cfg):
    """K = 1: E[x_0 | x_t] = mu + C (C + sigma^2 I)^{-1} (x_t / a_t - mu) (Bishop 2006, Eq. 2.116)."""
    process = build_process(cfg)
    g = torch.Generator().manual_seed(0)
    A = torch.randn(3, 3, generator=g, dtype=torch.float64)
    C = A @ A.T + 0.1 * torch.eye(3, dtype=torch.float64)
    mu = torch.randn(1, 3, generator=g, dtype=torch.float64)
    oracle = GMMOracle(process, mu, C[None], torch.ones(1))
    for t in (0, 10, 300, 999):
        x = torch.randn(5, 3, generator=g, dtype=torch.float64)
        pred = oracle(x, t)
        a, sig = float(process.a(torch.tensor([t]))[0]), float(process.sigma(torch.tensor([t]))[0])
        expected = mu + (x / a - mu) @ torch.linalg.solve(C + sig**2 * torch.eye(3, dtype=torch.float64), C)
        assert torch.allclose(pred.x0, expected, atol=1e-10)
        assert torch.allclose(pred.eps, (x / a - expected) / sig, atol=1e-8)


@pytest.mark.parametrize("cfg", PROCESSES, ids=IDS)
def test_score_is_the_gradient_of_the_noisy_marginal(cfg, ring):
    """pred.score = grad_x log p_t(x) (autograd on the closed-form marginal) = -eps / std_t."""
    process = build_process(cfg)
    oracle = GMMOracle.from_mixture(process, ring)
    for t in (0, 50, 400, 999):
        _, _, tt, x = _noisy(process, ring, 64, t)
        x = x.clone().requires_grad_(True)
        grad, = torch.autograd.grad(oracle.log_prob_t(x, tt).sum(), x)
        pred = oracle(x.detach(), tt)
        assert torch.allclose(pred.score, grad, rtol=1e-7, atol=1e-7 * float(grad.abs().max()))
        assert torch.allclose(pred.score, -pred.eps / process.std(tt)[:, None], rtol=1e-12)
        if cfg.kind == "vp":  # score = -eps / sqrt(1 - alpha_bar_t), Song & Ermon's view of DDPM's eps
            assert torch.allclose(pred.score, -pred.eps / (1 - process.alpha_bar[tt])[:, None].sqrt(), rtol=1e-10)


class TinyNet(nn.Module):
    """A small random MLP with the nets' signature forward(x, t, y=None)."""

    def __init__(self, d=2):
        super().__init__()
        self.f = nn.Sequential(nn.Linear(d + 1, 32), nn.SiLU(), nn.Linear(32, d))

    def forward(self, x, t, y=None):
        return self.f(torch.cat([x, t[:, None].to(x.dtype) / 1000], 1))


@pytest.mark.parametrize("param", ["eps", "x0", "v"])
def test_score_eps_equivalence_for_a_trained_style_denoiser(param):
    """The same identity for a ModelDenoiser around a tiny random network (whatever it predicts)."""
    torch.manual_seed(0)
    process = build_process(ProcessConfig(T=100))
    den = ModelDenoiser(TinyNet().double(), process, DenoiserConfig(parameterization=param, clip_x0=False))
    x = torch.randn(16, 2, dtype=torch.float64)
    t = torch.randint(0, 100, (16,))
    pred = den(x, t)
    assert torch.allclose(pred.score, -pred.eps / (1 - process.alpha_bar[t])[:, None].sqrt(), rtol=1e-12)
    assert torch.allclose(process.x0_from_eps(x, t, pred.eps), pred.x0, atol=1e-10)


@pytest.mark.parametrize("t", [5, 100, 500])
def test_tweedie_orthogonality(ring, t):
    """E[x_0 | x_t] is the best predictor: its residual is uncorrelated with functions of x_t (Monte Carlo, 5 se)."""
    process = build_process(PROCESSES[0])
    oracle = GMMOracle.from_mixture(process, ring)
    x0, eps, tt, x = _noisy(process, ring, 40_000, t, seed=1)
    pred = oracle(x, tt)
    for resid in (x0 - pred.x0, eps - pred.eps):
        for feat in (torch.ones_like(x), x, x.flip(1), x**2):
            prod = resid * feat
            se = prod.std(0) / math.sqrt(len(prod))
            assert bool((prod.mean(0).abs() < 5 * se + 1e-12).all())


def test_image_shaped_input_and_dtype():
    process = build_process(PROCESSES[0])
    mix = random_diagonal_mixture(d=12, K=3)
    oracle = GMMOracle.from_mixture(process, mix)
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    img, flat = oracle(x, 300), oracle(x.reshape(4, 12), 300)
    assert img.x0.shape == x.shape and torch.allclose(img.x0.reshape(4, 12), flat.x0)
    assert oracle(x.float(), 300).x0.dtype == torch.float32
    with pytest.raises(ValueError, match="d = 12"):
        oracle(torch.randn(4, 5), 300)


def test_diagonal_and_full_covariances_agree():
    mix = random_diagonal_mixture(d=6, K=3)
    full = GaussianMixture(mix.means, torch.diag_embed(mix.covs), mix.weights)
    x = torch.randn(50, 6, dtype=torch.float64)
    for sigma in (0.0, 0.03, 1.0, 30.0):
        assert torch.allclose(mix.log_prob(x, sigma), full.log_prob(x, sigma), atol=1e-10)
        if sigma > 0:
            assert torch.allclose(mix.eps_hat(x, sigma), full.eps_hat(x, sigma), atol=1e-10)
    per_row = torch.linspace(0.1, 2.0, 50, dtype=torch.float64)  # per-example sigma takes the general path
    assert torch.allclose(mix.eps_hat(x, per_row), full.eps_hat(x, per_row), atol=1e-10)


def test_class_conditional_oracle_is_the_chosen_component(ring):
    process = build_process(PROCESSES[0])
    oracle = GMMOracle.from_mixture(process, ring)
    single = GMMOracle(process, ring.means[3:4], ring.covs[3:4], torch.ones(1))
    x = torch.randn(8, 2, dtype=torch.float64)
    assert torch.allclose(oracle(x, 200, torch.full((8,), 3)).x0, single(x, 200).x0, atol=1e-12)


def test_fixed_large_variance(ring):
    process = build_process(PROCESSES[0])
    oracle = GMMOracle.from_mixture(process, ring, var_type="fixed_large")
    pred = oracle(torch.zeros(2, 2, dtype=torch.float64), 500)
    assert torch.allclose(pred.log_var, process.betas[500].log().expand(2, 2))


def test_data_sampling_density_and_entropy(ring):
    g = torch.Generator().manual_seed(0)
    x = ring.sample(50_000, g)
    assert torch.allclose(x.mean(0), (ring.weights[:, None] * ring.means).sum(0), atol=0.02)
    # the density integrates to one (grid over [-1.5, 1.5]^2)
    u = torch.linspace(-1.5, 1.5, 301, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    assert abs(float(ring.log_prob(grid).exp().sum() * (u[1] - u[0]) ** 2) - 1) < 1e-3
    # entropy of a single Gaussian: 0.5 log det(2 pi e C)
    one = GaussianMixture(ring.means[:1], ring.covs[:1], torch.ones(1))
    H, se = one.entropy(20_000, g)
    assert abs(H - 0.5 * float(torch.logdet(2 * math.pi * math.e * ring.covs[0]))) < 5 * se


# ----- the distance to the truth ---------------------------------------------------------------------------
def _perturb(mix, x, labels, *, spread=1.0, shift=0.0, drop_mode=None, drop=0.0, seed=0):
    """Exact samples made wrong in one controlled way."""
    x = mix.means[labels] + spread * (x - mix.means[labels]) + shift
    if drop_mode is not None:
        g = torch.Generator().manual_seed(seed)
        keep = (labels != drop_mode) | (torch.rand(len(x), generator=g, dtype=torch.float64) > drop)
        x = x[keep]
    return x


@pytest.mark.parametrize("mix", [ring_mixture(), random_diagonal_mixture(d=64, K=4)], ids=["ring", "64d"])
def test_distance_is_at_its_floor_for_exact_samples_and_sees_each_error(mix):
    n = 10_000
    x, labels = mix.sample(n, torch.Generator().manual_seed(0), return_labels=True)
    exact = mixture_distance(mix, x)
    floor = kl_floor(mix, n)
    assert abs(exact["kl"] - floor) < 0.5 * floor + 3 * exact["kl_se"]
    assert exact["mass_tv"] < 0.02 and exact["cov_err"] < 0.1
    H, H_se = mix.entropy(20_000, torch.Generator().manual_seed(1))
    neg_h = (-H, H_se)
    gap = mixture_distance(mix, x, neg_entropy=neg_h)
    assert abs(gap["loglik_gap"]) < 4 * gap["loglik_gap_se"]

    wider = mixture_distance(mix, _perturb(mix, x, labels, spread=1.1), neg_entropy=neg_h)
    fewer = mixture_distance(mix, _perturb(mix, x, labels, drop_mode=0, drop=0.3))
    moved = mixture_distance(mix, _perturb(mix, x, labels, shift=0.02))
    for name, bad in (("spread", wider), ("mode weight", fewer), ("mean", moved)):
        assert bad["kl"] > exact["kl"] + 4 * math.hypot(bad["kl_se"], exact["kl_se"]), name
    assert wider["cov_err"] > 0.15 and wider["loglik_gap"] < -3 * wider["loglik_gap_se"]
    assert fewer["mass_tv"] > 0.02
    assert moved["mean_err"] > exact["mean_err"]


def test_distance_of_non_finite_samples_is_infinite(ring):
    x = ring.sample(100, torch.Generator().manual_seed(0))
    x[3, 0] = float("nan")
    assert mixture_distance(ring, x)["kl"] == math.inf
