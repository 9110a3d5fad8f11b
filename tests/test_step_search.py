"""Searched schedules (samplers/search.py): the dynamic programme is exact, the result is a valid deterministic schedule,
and on the oracle it generalises: searched on one batch of x_T, it is closer to the truth on another than logsnr-jump."""

import itertools
import math

import numpy as np
import pytest
import torch

from difflab.errors import UserError
from difflab.oracle import GMMOracle, mixture_distance, random_diagonal_mixture, ring_mixture
from difflab.process import ProcessConfig, build_process
from difflab.samplers import get_sampler, prior_sample, search_steps, select_steps
from difflab.samplers.search import dp_path

PROCESS = build_process(ProcessConfig(kind="vp", schedule="linear", T=1000))


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one thread (conftest.one_thread)


def test_dp_finds_the_least_cost_path():
    rng = np.random.default_rng(0)
    G = 8
    cost = rng.uniform(0.1, 2.0, (G, G))
    for k in range(1, G):
        path, total = dp_path(cost, k)
        brute = min(itertools.combinations(range(1, G - 1), k - 1),
                    key=lambda mid: sum(cost[a, b] for a, b in zip((0, *mid), (*mid, G - 1))))
        best = sum(cost[a, b] for a, b in zip((0, *brute), (*brute, G - 1)))
        assert path[0] == 0 and path[-1] == G - 1 and len(path) == k + 1
        assert math.isclose(total, best) and math.isclose(sum(cost[a, b] for a, b in zip(path, path[1:])), best)


@pytest.fixture(scope="module")
def ring():
    return GMMOracle.from_mixture(PROCESS, ring_mixture())


def test_search_gives_valid_deterministic_steps(ring):
    kw = dict(batch=200, grid=60, seed=3)
    a = search_steps(ring, 6, (2,), **kw)
    assert len(a) == 6 and all(s > t for s, t in zip(a, a[1:])) and a[0] == PROCESS.T - 1 and a[-1] == 0
    assert a == search_steps(ring, 6, (2,), **kw)


@pytest.mark.parametrize("bad", [1, 0, 61, 2.5, True])
def test_bad_step_count_is_a_user_error(ring, bad):
    with pytest.raises(UserError, match="steps"):
        search_steps(ring, bad, (2,), batch=10, grid=60)


def test_stochastic_sampler_is_a_user_error(ring):
    with pytest.raises(UserError, match="deterministic"):
        search_steps(ring, 5, (2,), sampler="ddpm", batch=10, grid=60)


@pytest.mark.parametrize("d", [2, 64])
def test_searched_unipc_beats_logsnr_jump_on_held_out_noise(d):
    """NFE 10, searched with seed 1, judged on the truth from x_T of seed 0 (as in benchmarks/samplers_oracle.py)."""
    mix = ring_mixture() if d == 2 else random_diagonal_mixture(d=64, K=4, generator=torch.Generator().manual_seed(0))
    shape = (2,) if d == 2 else (1, 8, 8)
    oracle = GMMOracle.from_mixture(PROCESS, mix)
    steps = search_steps(oracle, 10, shape, batch=1000, seed=1)
    x_T = prior_sample(PROCESS, ((20000 if d == 2 else 3000), *shape), torch.Generator().manual_seed(0))
    unipc = get_sampler("unipc").fn
    searched = mixture_distance(mix, unipc(oracle, x_T, steps))
    base = mixture_distance(mix, unipc(oracle, x_T, select_steps(PROCESS, 10, "logsnr-jump")))
    assert searched["kl"] < base["kl"] - math.hypot(searched["kl_se"], base["kl_se"]), (steps, searched["kl"], base["kl"])
