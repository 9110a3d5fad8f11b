"""Every registered sampler reaches the true distribution on the exact Gaussian-mixture oracle, and improves with steps.

Distance: `mixture_distance(...)["kl"]` (moment-projected KL to the analytic truth; see difflab/oracle/distance.py).
Deterministic ODE solvers also show their convergence order on the map x_T -> x_0 against an RK45 reference
at tight tolerance for the same x_T, on a VP process whose sigmas are exactly log-uniform (so that the
log-SNR-uniform steps of every n land on grid points and the step size halves exactly).
"""

import inspect
import math

import pytest
import torch

from difflab.oracle import GMMOracle, kl_floor, mixture_distance, random_diagonal_mixture, ring_mixture
from difflab.process import ProcessConfig, VPProcess, build_process
from difflab.samplers import (SAMPLERS, SPACINGS, count_nfe, get_sampler, karras_sigmas, ode_rk45, prior_sample, sampler_table,
                              select_steps, timesteps)
from difflab.samplers.steps import SIGMA_SPACINGS

RING = ring_mixture()  # 8 elongated modes on a circle, unequal weights, 2-D
G64 = random_diagonal_mixture(d=64, K=4, generator=torch.Generator().manual_seed(0))  # sampled as (B, 1, 8, 8)
N = {2: 4000, 64: 2000}  # samples per run
PROCESSES = {
    "vp-linear": ProcessConfig(kind="vp", schedule="linear", T=1000),
    "vp-cosine": ProcessConfig(kind="vp", schedule="cosine", T=1000),
    "ve": ProcessConfig(kind="ve", T=1000, sigma_min=0.01, sigma_max=10.0),
}
# Tolerance on kl above the expected small-sample floor (kl_floor): the sampler error accepted at the recommended
# steps. For scale: exact samples sit at the floor (~0.004 in 2-D, ~0.13 in 64-D at these sizes); DDIM with 10
# steps is at kl ~ 0.2-7 on the ring depending on the spacing; kl sums over dimensions, hence the larger 64-D value.
TOL = {2: 0.02, 64: 0.15}

# (sampler, process, data, fewer steps): every sampler on both mixtures under VP-linear; a few under cosine;
# the score-based ones (and ddpm) also under VE.
CASES = [(name, "vp-linear", d) for name in SAMPLERS for d in (2, 64)]
CASES += [(name, "vp-cosine", 2) for name in ("ddim", "heun", "dpmpp-2m", "unipc", "pc")]
CASES += [(name, "ve", 2) for name in ("langevin", "pc", "ddpm", "dpmpp-2m")]


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one thread (conftest.one_thread)


def _setup(process_key: str, d: int):
    process = build_process(PROCESSES[process_key])
    mix = RING if d == 2 else G64
    shape = (N[d], 2) if d == 2 else (N[d], 1, 8, 8)
    x_T = prior_sample(process, shape, torch.Generator().manual_seed(0))
    return process, mix, GMMOracle.from_mixture(process, mix), x_T


def _run(name, oracle, process, x_T, n_steps, spacing, **options):
    spec = get_sampler(name)
    return spec.fn(oracle, x_T, select_steps(process, n_steps, spacing), generator=torch.Generator().manual_seed(1), **options)


def _few_steps(spec) -> int:
    """A step count well below the recommended one, where the sampler must be measurably worse."""
    return max(3, spec.recommended_steps // 20)


@pytest.mark.parametrize("name,process_key,d", CASES, ids=[f"{n}-{p}-{d}d" for n, p, d in CASES])
def test_sampler_reaches_truth_and_improves_with_steps(name, process_key, d):
    spec = get_sampler(name)
    process, mix, oracle, x_T = _setup(process_key, d)
    floor = kl_floor(mix, N[d])
    options = {}  # the recommendation is made with the function's own defaults: what every caller gets
    x = _run(name, oracle, process, x_T, spec.recommended_steps, spec.recommended_spacing, **options)
    assert x.shape == x_T.shape
    rec = mixture_distance(mix, x)
    assert rec["kl"] < floor + TOL[d], f"{name} at {spec.recommended_steps} steps: kl {rec['kl']:.4f} (floor {floor:.4f})"
    if name == "ode-rk45":  # adaptive: 'fewer steps' is a looser tolerance instead
        worse = mixture_distance(mix, _run(name, oracle, process, x_T, 2, "linspace", rtol=0.3, atol=0.3))
    else:
        worse = mixture_distance(mix, _run(name, oracle, process, x_T, _few_steps(spec), spec.recommended_spacing, **options))
    margin = 2 * math.hypot(rec["kl_se"], worse["kl_se"])  # bootstrap se is conservative near the floor
    assert worse["kl"] > rec["kl"] + margin, f"{name}: kl {worse['kl']:.4f} with fewer steps vs {rec['kl']:.4f}"


def _counting(oracle):
    """The oracle with a call counter (at_sigma included: the adaptive solver's evaluations)."""

    class Counting:
        process, nfe = oracle.process, 0

        def __call__(self, x, t, y=None, s=None):
            Counting.nfe += 1
            return oracle(x, t, y, s=s)

        def at_sigma(self, x_hat, sigma, y=None):
            Counting.nfe += 1
            return oracle.at_sigma(x_hat, sigma, y)

    return Counting()


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_nfe_matches_registry(name):
    spec = get_sampler(name)
    process, mix, oracle, _ = _setup("vp-linear", 2)
    x_T = prior_sample(process, (16, 2), torch.Generator().manual_seed(0))
    den = _counting(oracle)
    n = 7
    spec.fn(den, x_T, select_steps(process, n, "logsnr"), generator=torch.Generator().manual_seed(0))
    expected = count_nfe(spec, n)
    if expected is None:  # adaptive
        assert den.nfe > 6
    else:
        assert den.nfe == expected


# ----- convergence orders of the deterministic solvers ----------------------------------------------------------
ORDERS = [  # (sampler, options, expected order of the global error in the step size)
    ("ddim", {}, 1.0),
    ("euler", {}, 1.0),
    ("heun", {}, 2.0),
    ("dpmpp-2m", {}, 2.0),
    ("dpmpp-2s", {}, 2.0),
    ("dpmpp-3m", {}, 3.0),
    ("unipc", {"corrector": False}, 2.0),  # UniP-2 alone
    ("unipc", {"order": 3, "corrector": False}, 3.0),  # UniP-3 alone
    ("unipc", {}, 3.0),  # UniC raises the order by one (Zhao et al. 2023, Thm 3.2)
    ("unipc", {"variant": "bh1"}, 3.0),
    ("unipc", {"order": 3}, 4.0),
]


@pytest.fixture(scope="module")
def order_setup():
    """VP process with sigma log-uniform on [0.02, 80] over T = 1025 steps; the RK45 reference map for 256 x_T."""
    T = 1025
    sigma = torch.exp(torch.linspace(math.log(0.02), math.log(80.0), T, dtype=torch.float64))
    alpha_bar = 1 / (1 + sigma**2)
    process = VPProcess(1 - alpha_bar / torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]]))
    oracle = GMMOracle.from_mixture(process, RING)
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = ode_rk45(oracle, x_T, [T - 1, 0], rtol=1e-10, atol=1e-10)
    return process, oracle, x_T, ref


@pytest.mark.parametrize("name,options,order", ORDERS, ids=[f"{n}{o}" for n, o, _ in ORDERS])
def test_ode_solver_convergence_order(order_setup, name, options, order):
    process, oracle, x_T, ref = order_setup
    errs = []
    ns = (33, 65, 129)
    for n in ns:  # n steps: h = log(4000) / (n - 1), halving each time
        steps = list(range(process.T - 1, -1, -(process.T - 1) // (n - 1)))
        x = get_sampler(name).fn(oracle, x_T, steps, **options)
        # Median over x_T: the few trajectories that start on a boundary between modes flip mode under tiny
        # errors and would dominate a mean.
        errs.append(float((x - ref).norm(dim=1).median()))
    slope = math.log(errs[0] / errs[-1]) / math.log((ns[-1] - 1) / (ns[0] - 1))
    assert order - 0.4 < slope < order + 0.6, f"{name} {options}: errors {errs}, measured order {slope:.2f}, expected {order}"


def test_ode_rk45_meets_its_tolerance(order_setup):
    process, oracle, x_T, ref = order_setup
    loose = ode_rk45(oracle, x_T, [process.T - 1, 0], rtol=1e-6, atol=1e-6)
    assert float((loose - ref).abs().max()) < 1e-4


# ----- determinism and the score view ------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n, s in SAMPLERS.items() if not s.stochastic])
def test_deterministic_samplers_ignore_the_generator(name):
    process, _, oracle, _ = _setup("vp-linear", 2)
    x_T = prior_sample(process, (64, 2), torch.Generator().manual_seed(3))
    steps = select_steps(process, 8, "logsnr")
    a = get_sampler(name).fn(oracle, x_T, steps, generator=torch.Generator().manual_seed(1))
    b = get_sampler(name).fn(oracle, x_T, steps, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", [n for n, s in SAMPLERS.items() if s.stochastic])
def test_stochastic_samplers_are_reproducible_from_the_generator(name):
    process, _, oracle, _ = _setup("vp-linear", 2)
    x_T = prior_sample(process, (64, 2), torch.Generator().manual_seed(3))
    steps = select_steps(process, 6, "logsnr")
    options = {"n_steps_each": 3} if name == "langevin" else {}

    def run(seed):
        return get_sampler(name).fn(oracle, x_T, steps, generator=torch.Generator().manual_seed(seed), **options)

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


# ----- step selection and the registry ---------------------------------------------------------------------------
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("process_key", list(PROCESSES))
def test_every_spacing_gives_n_distinct_decreasing_steps(spacing, process_key):
    process = build_process(PROCESSES[process_key])
    for n in (1, 2, 3, 10, 57, 500, 999, 1000):
        steps = select_steps(process, n, spacing)
        assert len(steps) == n and all(a > b for a, b in zip(steps, steps[1:])), (n, steps[:5])
        assert 0 <= steps[-1] and steps[0] <= process.T - 1
        if spacing in SIGMA_SPACINGS and n >= 2:
            assert steps[0] == process.T - 1 and steps[-1] == 0


def test_karras_schedule():
    s = karras_sigmas(0.002, 80.0, 18)  # EDM's CIFAR-10 setting
    assert math.isclose(s[0], 80.0) and math.isclose(s[-1], 0.002) and all(s[1:] < s[:-1])
    # uniform in sigma^(1/rho)
    r = s ** (1 / 7)
    assert max(abs(d - (r[1] - r[0])) for d in r[1:] - r[:-1]) < 1e-12
    process = build_process(PROCESSES["vp-linear"])  # sigma_{T-1} = 157 > 80: T-1 first, then the schedule
    steps = select_steps(process, 10, "karras")
    sig = process.sigma(torch.tensor(steps))
    assert steps[0] == 999 and abs(float(sig[1]) - 80.0) / 80.0 < 0.02
    with pytest.raises(ValueError, match="sigma table"):
        timesteps(1000, 10, "karras")


def test_registry_listing_and_recommendations():
    rows = sampler_table()
    assert [r["name"] for r in rows] == list(SAMPLERS)
    for r in rows:
        spec = get_sampler(r["name"])
        assert r["nfe_per_step"] >= 1 and isinstance(r["stochastic"], bool) and r["summary"]
        assert spec.recommended_spacing in SPACINGS and r["guidance"] is (spec.guided is not None)
        params = inspect.signature(spec.fn).parameters
        # The option schema is the signature: every keyword-only parameter but the shared ones, with its own default.
        want = {k: p.default for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and k not in ("y", "generator", "callback")}
        assert r["options"] == want
        for shared in ("y", "generator", "callback"):
            assert params[shared].kind is inspect.Parameter.KEYWORD_ONLY
        # NFE per step is stated at the default options: the slope of the whole run's NFE must equal it.
        if count_nfe(spec, 1) is not None:
            assert (count_nfe(spec, 101) - count_nfe(spec, 1)) / 100 == spec.nfe_per_step, r["name"]
    assert count_nfe(get_sampler("heun"), 10) == 19 and count_nfe(get_sampler("ode-rk45"), 10) is None
    assert count_nfe(get_sampler("langevin"), 10, n_steps_each=5, denoise=False) == 50
    assert count_nfe(get_sampler("langevin"), 10) == 10 * get_sampler("langevin").nfe_per_step + 1  # default n_steps_each, denoise


def test_sampler_options_are_parsed_and_validated_against_the_schema():
    from difflab.errors import UserError

    unipc, ddim_ = get_sampler("unipc"), get_sampler("ddim")
    assert unipc.parse_options({"order": "3", "variant": "bh1", "corrector": "false"}) == {"order": 3, "variant": "bh1", "corrector": False}
    assert ddim_.parse_options({"eta": "0.5"}) == {"eta": 0.5} and ddim_.parse_options({"eta": 1}) == {"eta": 1.0}
    assert get_sampler("ddpm").parse_options(None) == {}
    with pytest.raises(UserError, match="sampler 'ddim' has no option 'order'; its options: eta"):
        ddim_.parse_options({"order": "3"})
    with pytest.raises(UserError, match="has no option 'eta'; its options: none"):
        get_sampler("dpmpp-2m").parse_options({"eta": "0"})
    with pytest.raises(UserError, match="unipc.order must be an integer"):
        unipc.parse_options({"order": "2.5"})
    with pytest.raises(UserError, match="unipc.variant must be one of bh1, bh2"):
        unipc.parse_options({"variant": "bh3"})
    with pytest.raises(UserError, match="ddim.eta must be a number, not NaN"):
        ddim_.parse_options({"eta": "nan"})
    with pytest.raises(UserError, match="unipc.corrector must be true or false"):
        unipc.parse_options({"corrector": "maybe"})


# ----- options and paths beyond the defaults ---------------------------------------------------------------------
class _Discrete:
    """The oracle seen as a discretely trained network: integer timesteps only (no at_sigma)."""

    def __init__(self, oracle):
        self.oracle, self.process, self.nfe = oracle, oracle.process, 0

    def __call__(self, x, t, y=None, s=None):
        self.nfe += 1
        return self.oracle(x, t, y, s=s)


def test_ode_rk45_on_a_discretely_trained_denoiser():
    """Between timesteps eps is interpolated in log sigma: the result matches the continuous oracle closely."""
    process, _, oracle, x_T = _setup("vp-linear", 2)
    exact = ode_rk45(oracle, x_T[:500], [process.T - 1, 0])
    den, info = _Discrete(oracle), {}
    interp = ode_rk45(den, x_T[:500], [process.T - 1, 0], callback=info.update)
    assert float((exact - interp).norm(dim=1).median()) < 1e-3
    assert info["nfe"] == den.nfe


@pytest.mark.parametrize("name", ["heun", "euler"])
def test_stochastic_churn(name):
    """EDM's churn (Algorithm 2): stochastic, reproducible, and still at the truth at the recommended steps."""
    spec = get_sampler(name)
    process, mix, oracle, x_T = _setup("vp-linear", 2)
    run = lambda seed: get_sampler(name).fn(  # noqa: E731
        oracle, x_T, select_steps(process, spec.recommended_steps, spec.recommended_spacing), S_churn=10.0,
        S_tmin=0.05, S_tmax=50.0, generator=torch.Generator().manual_seed(seed))
    a = run(1)
    assert torch.equal(a, run(1)) and not torch.equal(a, run(2))
    assert mixture_distance(mix, a)["kl"] < kl_floor(mix, N[2]) + TOL[2]


def test_pc_with_the_ancestral_predictor():
    process, mix, oracle, x_T = _setup("vp-linear", 2)
    x = _run("pc", oracle, process, x_T, 100, "logsnr", predictor="ancestral")
    assert mixture_distance(mix, x)["kl"] < kl_floor(mix, N[2]) + TOL[2]
