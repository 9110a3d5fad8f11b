"""Searched time-step schedules: the few timesteps a given model and solver want, found from the model alone.

Two stages, both measured against a teacher that solves the probability-flow ODE with many steps (UniPC-2 on a
`grid` of timesteps uniform in log-SNR) from a batch of x_T:

1. GITS (Chen et al. 2024, "On the trajectory regularity of ODE-based diffusion sampling", Sec. 4): a DDIM step
   from teacher point i to a later grid point j needs only D at i, which the teacher already computed, so the matrix
   of one-step local errors costs no network evaluation; dynamic programming finds the path of least total error.
   Each error is measured in units of the noise level it lands on, |x_hat_j - teacher_j| / sigma_j: two Gaussians of
   width sigma whose means differ by delta are delta^2 / (2 sigma^2) apart in KL, so a displacement that is large
   next to the noise left is what the data distribution notices. (In absolute units the path saves its steps for
   high noise and takes one big, visibly blurring step at the end.)
2. Refinement (in the spirit of Align Your Steps, Sabour et al. 2024, and optimal-stepsize search): coordinate
   descent over the interior grid points on the end-to-end error of the actual few-step solver against the teacher
   from the same x_T, in the same units at the last timestep.

Nothing here looks at the data distribution, so it runs unchanged on a trained network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from difflab.denoiser import Denoiser
from difflab.errors import UserError
from difflab.samplers.sigma import a_of, prior_sample, sigma_of
from difflab.samplers.steps import select_steps

TRIM = 0.02  # fraction of the largest end-to-end errors the refinement ignores
REFINE_MOVES = (8, 4, 2, 1)  # coordinate-descent moves, in grid cells (~0.05 in log sigma each at grid = 200)


def dp_path(cost: np.ndarray, k: int) -> tuple[list[int], float]:
    """Nodes 0 = g_0 < g_1 < ... < g_k = G - 1 with least sum of cost[g_i, g_{i+1}] (GITS Sec. 4, dynamic programming).

    cost is (G, G); only its strict upper triangle is read (edges go forward). Returns (path, its total cost).
    """
    G = cost.shape[0]
    if not 1 <= k <= G - 1:
        raise ValueError(f"a path of {k} edges needs 1..{G - 1} of them; the grid has {G} nodes")
    c = np.where(np.triu(np.ones((G, G), dtype=bool), 1), cost, np.inf)
    best = np.full(G, np.inf)  # best[j]: least cost of reaching node j in the current number of edges
    best[0] = 0.0
    back = np.zeros((k + 1, G), dtype=int)
    for e in range(1, k + 1):
        total = best[:, None] + c  # [from i, to j]
        back[e] = total.argmin(axis=0)
        best = total.min(axis=0)
    path = [G - 1]
    for e in range(k, 0, -1):
        path.append(int(back[e, path[-1]]))
    return path[::-1], float(best[G - 1])


def teacher_run(denoiser: Denoiser, x_T: Tensor, grid: Sequence[int], y: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(states (G, B, ...) x_hat at each grid point, D (G, B, ...) the model's x0 there, final samples): UniPC-2 over grid."""
    from difflab.samplers.unipc import unipc

    p = denoiser.process
    states, D = [x_T / a_of(p, grid[0])], []

    def keep(info: dict) -> None:
        # UniPC evaluates the model at the predictor's state and corrects it afterwards: keeping that state makes
        # every pair (x_hat_i, D_i) one exact model evaluation, which the free DDIM steps below rely on.
        D.append(info["x0"])
        if info["s"] >= 0:
            states.append(info["x"] / a_of(p, info["s"]))

    final = unipc(denoiser, x_T, list(grid), y=y, callback=keep)
    return torch.stack(states), torch.stack(D), final


def local_cost(states: Tensor, D: Tensor, sigmas: Sequence[float]) -> np.ndarray:
    """(G, G) RMS errors of the DDIM step from teacher point i to j, x_hat_j = D_i + (sigma_j / sigma_i)(x_hat_i - D_i),
    against the teacher at j, divided by sigma_j (see the module docstring)."""
    G = states.shape[0]
    sig = torch.tensor(list(sigmas), dtype=torch.float64)
    S, Dd = states.flatten(2).double(), D.flatten(2).double()
    cost = np.full((G, G), np.inf)
    for i in range(G - 1):
        ratio = (sig[i + 1:] / sig[i])[:, None, None]
        err = Dd[i] + ratio * (S[i] - Dd[i]) - S[i + 1:]  # (G - i - 1, B, d)
        cost[i, i + 1:] = (err.pow(2).sum(2).mean(1).sqrt() / sig[i + 1:]).numpy()
    return cost


def check_search(T: int, sampler: str, n, grid: int | None = None, batch: int = 1) -> int:
    """UserError unless `sampler` is deterministic with fixed steps, 2 <= n <= grid <= T and batch >= 1; returns the grid."""
    from difflab.samplers.registry import get_sampler

    spec = get_sampler(sampler)
    grid = min(200, T) if grid is None else grid
    if spec.stochastic or (spec.nfe is not None and spec.nfe(2, {}) is None):
        raise UserError(f"step search needs a deterministic fixed-step sampler, not '{sampler}'; use e.g. unipc or dpmpp-2m")
    if not 3 <= grid <= T:
        raise UserError(f"the search grid must have 3..T={T} timesteps; got {grid}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 2 <= n <= grid:
        raise UserError(f"a searched schedule needs 2 <= steps <= grid={grid}; got {n!r} (raise grid for more steps)")
    if batch < 1:
        raise UserError(f"the search batch must have at least 1 example; got {batch}")
    return grid


@torch.no_grad()
def search_steps(
    denoiser: Denoiser,
    n: int,
    shape: Sequence[int],
    *,
    sampler: str = "unipc",
    options: dict | None = None,
    y: Tensor | None = None,
    batch: int = 1000,
    grid: int | None = None,
    refine: bool = True,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    callback: Callable[[dict], None] | None = None,
) -> list[int]:
    """n decreasing timesteps for `sampler` (a deterministic one) on this denoiser: GITS dynamic programming (Chen et
    al. 2024) on a `grid`-step teacher (default min(200, T)) from `batch` x_T of one example's `shape`, then end-to-end
    coordinate descent."""
    from difflab.samplers.registry import get_sampler

    p = denoiser.process
    spec = get_sampler(sampler)
    grid = check_search(p.T, sampler, n, grid, batch)
    if y is not None and len(y) != batch:
        raise UserError(f"y must hold one label per search example ({batch}); got {len(y)}")
    n, options = int(n), dict(options or {})
    x_T = prior_sample(p, (batch, *shape), torch.Generator().manual_seed(seed), dtype=dtype).to(device)
    g = select_steps(p, grid, "logsnr")  # T-1 ... 0, uniform in log-SNR
    sig = [sigma_of(p, t) for t in g]
    states, D, _ = teacher_run(denoiser, x_T, g, y)
    # The path ends at t = 0, the least noise the model knows, like every sigma spacing: the step from there to the
    # data is x_0 = D, the same for teacher and student.
    path, _ = dp_path(local_cost(states, D, sig), n - 1)
    nfe = grid
    if callback is not None:
        callback({"stage": "dp", "steps": [g[k] for k in path], "nfe": nfe})
    if not refine or n < 3:
        return [g[k] for k in path]

    target, a_0 = states[-1], a_of(p, g[-1])

    def loss(nodes: list[int]) -> float:
        """Mean squared distance to the teacher at t = 0, in units of sigma_0^2 (the solver's state before x_0 = D)."""
        last: list[Tensor] = []
        spec.fn(denoiser, x_T, [g[k] for k in nodes], y=y, **options,
                callback=lambda info: last.append(info["x"]) if info["s"] == g[-1] else None)
        err2 = (last[-1] / a_0 - target).flatten(1).double().pow(2).sum(1).sort().values
        # Trimmed: the few x_T on a boundary between modes flip under tiny changes and would decide the search alone.
        return float(err2[: max(1, int(len(err2) * (1 - TRIM)))].mean()) / sig[-1] ** 2

    best, runs = loss(path), 1
    for move in REFINE_MOVES:
        improved = True
        while improved:  # sweep until no single timestep moves by `move` grid cells for the better
            improved = False
            for k in range(1, n - 1):
                for new in (path[k] - move, path[k] + move):
                    new = min(max(new, path[k - 1] + 1), path[k + 1] - 1)
                    if new == path[k]:
                        continue
                    trial = path[:k] + [new] + path[k + 1:]
                    value, runs = loss(trial), runs + 1
                    if value < best:
                        best, path, improved = value, trial, True
        if callback is not None:
            callback({"stage": "refine", "move": move, "steps": [g[k] for k in path], "loss": best,
                      "nfe": nfe + runs * (spec.nfe(n, options) if spec.nfe else spec.nfe_per_step * n)})
    return [g[k] for k in path]
