"""DDIM is deterministic, inversion + generation reconstructs the input on the oracle, and slerp behaves."""

import math

import pytest
import torch

from difflab.oracle import GMMOracle, random_diagonal_mixture, ring_mixture
from difflab.process import ProcessConfig, build_process
from difflab.samplers import ddim, invert, reconstruct, select_steps, slerp


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one thread (conftest.one_thread)


def _oracle(schedule="linear", mix=None):
    process = build_process(ProcessConfig(kind="vp", schedule=schedule, T=1000))
    mix = ring_mixture() if mix is None else mix
    return process, mix, GMMOracle.from_mixture(process, mix)


def test_ddim_eta0_is_deterministic():
    process, _, oracle = _oracle()
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    steps = select_steps(process, 20, "trailing")
    a = ddim(oracle, x_T, steps, eta=0.0, generator=torch.Generator().manual_seed(1))
    b = ddim(oracle, x_T.clone(), steps, eta=0.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    c = ddim(oracle, x_T, steps, eta=1.0, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("schedule,n,spacing", [("linear", 20, "logsnr"), ("linear", 50, "leading"), ("cosine", 50, "logsnr")])
def test_inversion_then_generation_reconstructs(schedule, n, spacing):
    process, mix, oracle = _oracle(schedule)
    x0 = mix.sample(300, torch.Generator().manual_seed(0))
    steps = select_steps(process, n, spacing)
    err = (reconstruct(oracle, x0, steps, fixed_point_iters=8) - x0).norm(dim=1)
    assert float(err.median()) < 1e-6 and float(err.mean()) < 1e-3, (float(err.median()), float(err.mean()))
    classic = (reconstruct(oracle, x0, steps) - x0).norm(dim=1)  # one explicit step per level: much worse
    assert float(classic.mean()) > 10 * float(err.mean())


def test_inversion_with_many_steps_converges_without_iterations():
    """Classic DDIM inversion is exact in the limit of small steps: the error shrinks as the steps grow."""
    process, mix, oracle = _oracle()
    x0 = mix.sample(200, torch.Generator().manual_seed(0))
    errs = [float((reconstruct(oracle, x0, select_steps(process, n, "linspace")) - x0).norm(dim=1).mean()) for n in (50, 200)]
    assert errs[1] < 0.6 * errs[0]


def test_inverted_data_looks_like_the_prior():
    """DDIM inversion of data gives latents distributed like x_T ~ N(0, I) (the probability-flow ODE's transport)."""
    process, mix, oracle = _oracle()
    x0 = mix.sample(4000, torch.Generator().manual_seed(0))
    z = invert(oracle, x0, select_steps(process, 50, "logsnr"), fixed_point_iters=4)
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.1
    assert abs(float((z[:, 0] * z[:, 1]).mean())) < 0.05


def test_inversion_on_image_shaped_data():
    mix = random_diagonal_mixture(d=48, K=3)
    process, _, oracle = _oracle(mix=mix)
    x0 = mix.sample(64, torch.Generator().manual_seed(0)).reshape(64, 3, 4, 4)
    steps = select_steps(process, 30, "logsnr")
    z = invert(oracle, x0, steps, fixed_point_iters=6)
    assert z.shape == x0.shape
    assert float((ddim(oracle, z, steps) - x0).abs().max()) < 1e-4


def test_slerp():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(3, 8, 8, generator=g), torch.randn(3, 8, 8, generator=g)
    assert torch.allclose(slerp(z0, z1, 0.0), z0, atol=1e-6) and torch.allclose(slerp(z0, z1, 1.0), z1, atol=1e-6)
    frames = slerp(z0, z1, torch.linspace(0, 1, 7))
    assert frames.shape == (7, 3, 8, 8) and frames.dtype == z0.dtype
    # equal-norm endpoints: every frame keeps the norm, and the angle advances uniformly
    z1n = z1 * z0.norm() / z1.norm()
    frames = slerp(z0, z1n, torch.linspace(0, 1, 5)).double()
    assert torch.allclose(frames.flatten(1).norm(dim=1), z0.double().norm().expand(5), rtol=1e-5)
    cos = lambda a, b: float((a * b).sum() / (a.norm() * b.norm()))  # noqa: E731
    angles = [math.acos(max(-1.0, min(1.0, cos(frames[0], f)))) for f in frames]
    assert all(abs(angles[i + 1] - angles[i] - angles[-1] / 4) < 1e-4 for i in range(4))
    # parallel vectors fall back to linear interpolation
    assert torch.allclose(slerp(z0, 2 * z0, 0.5), 1.5 * z0, atol=1e-5)
    with pytest.raises(ValueError):
        slerp(z0, z1[:2], 0.5)
