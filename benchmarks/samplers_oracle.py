"""Every difflab sampler vs diffusers' schedulers on the exact Gaussian-mixture oracle, at equal NFE.

Data: the 8-mode 2-D ring (elongated modes, unequal weights) under the VP process, T = 1000 linear betas.
Distance: `mixture_distance(...)["kl"]`, the moment-projected KL to the analytic truth (see difflab/oracle/distance.py),
with its bootstrap standard error; the floor is the expected kl of exact samples of the same size.
diffusers' schedulers are built from config (same betas, no download) and driven through `step`, their model
evaluated by the same oracle at the scheduler's own noise level. All runs share x_T. The "(searched)" rows use
`search_steps` (samplers/search.py), fitted on other x_T (seed + 1) from the model alone; their search cost is printed.

    .venv/bin/python benchmarks/samplers_oracle.py [--n 20000] [--nfe 5 10 20 50] [--markdown]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from difflab.oracle import GMMOracle, mixture_distance, ring_mixture
from difflab.process import ProcessConfig, build_process
from difflab.samplers import count_nfe, get_sampler, search_steps, select_steps

# difflab: (label, sampler, spacing, options); steps chosen so that NFE <= budget.
DIFFLAB = [
    ("ddpm (linspace)", "ddpm", "linspace", {}),
    ("ddim (leading)", "ddim", "leading", {}),
    ("ddim (logsnr-jump)", "ddim", "logsnr-jump", {}),
    ("pc (logsnr)", "pc", "logsnr", {}),
    ("euler (karras)", "euler", "karras", {}),
    ("heun (karras)", "heun", "karras", {}),
    ("dpmpp-2m (logsnr-jump)", "dpmpp-2m", "logsnr-jump", {}),
    ("dpmpp-3m (logsnr-jump)", "dpmpp-3m", "logsnr-jump", {}),
    ("dpmpp-2s (logsnr-jump)", "dpmpp-2s", "logsnr-jump", {}),
    ("unipc (karras)", "unipc", "karras", {}),
    ("unipc (logsnr)", "unipc", "logsnr", {}),
    ("unipc (logsnr-jump)", "unipc", "logsnr-jump", {}),
    ("unipc order 3 (logsnr-jump)", "unipc", "logsnr-jump", {"order": 3}),
]
# Searched schedules (samplers/search.py): searched on SEARCH_BATCH x_T of seed + 1, judged on the run's x_T (seed).
SEARCHED = ("unipc", "dpmpp-2m")
SEARCH_BATCH = 1000
LANGEVIN_LEVELS = 5  # langevin: up to 5 noise levels, n_steps_each = (NFE - 1) // levels, epsilon = 2e-4
RK45_TOLS = (1e-1, 1e-2, 1e-3, 1e-4)  # ode-rk45: NFE is adaptive; one row per tolerance


def diffusers_schedulers():
    """(label, constructor, NFE of n steps): diffusers' schedulers with difflab's betas; defaults and their
    documented schedule options (Karras sigmas, exponential = log-uniform sigmas)."""
    from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                           HeunDiscreteScheduler, UniPCMultistepScheduler)

    betas = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    one, two = (lambda n: n), (lambda n: 2 * n - 1)  # noqa: E731
    rows = [
        ("DDIMScheduler", lambda: DDIMScheduler(**betas, clip_sample=False), one),
        ("DDIMScheduler trailing", lambda: DDIMScheduler(**betas, clip_sample=False, timestep_spacing="trailing"), one),
        ("DPMSolverMultistep order 3", lambda: DPMSolverMultistepScheduler(**betas, solver_order=3), one),
        ("DPMSolverMultistep lu-lambdas", lambda: DPMSolverMultistepScheduler(**betas, use_lu_lambdas=True), one),
    ]
    for label, cls, nfe in (("DPMSolverMultistep", DPMSolverMultistepScheduler, one), ("UniPCMultistep", UniPCMultistepScheduler, one),
                            ("EulerDiscrete", EulerDiscreteScheduler, one), ("HeunDiscrete", HeunDiscreteScheduler, two)):
        rows.append((label, lambda cls=cls: cls(**betas), nfe))
        rows.append((label + " karras", lambda cls=cls: cls(**betas, use_karras_sigmas=True), nfe))
        rows.append((label + " exponential", lambda cls=cls: cls(**betas, use_exponential_sigmas=True), nfe))
    return rows


def run_diffusers(sched, oracle: GMMOracle, x_T: torch.Tensor, n_steps: int) -> torch.Tensor:
    """Drive a diffusers scheduler: eps from the oracle at the scheduler's noise level sigma_i for each call.

    VP-type schedulers (DDIM, DPM-Solver, UniPC) hold x_t; sigma-type (Euler, Heun) hold x_hat and scale it by
    1/sqrt(1 + sigma^2) in scale_model_input. Either way the model input is a_i x_hat with a_i = 1/sqrt(1 + sigma_i^2).
    """
    sched.set_timesteps(n_steps)
    x = x_T * float(sched.init_noise_sigma)
    ac = sched.alphas_cumprod.double()
    for i, t in enumerate(sched.timesteps):
        x_in = sched.scale_model_input(x, t)
        if hasattr(sched, "sigmas") and len(sched.sigmas) > i:
            sigma = float(sched.sigmas[i])
        else:  # DDIM: the noise level of its integer timestep
            sigma = math.sqrt((1 - float(ac[int(t)])) / float(ac[int(t)]))
        eps = oracle.at_sigma(x_in * math.sqrt(1 + sigma**2), sigma)[1]
        x = sched.step(eps, t, x).prev_sample
    return x


def largest_steps(nfe_budget: int, nfe_of) -> int:
    """The most steps n with nfe_of(n) <= budget (at least 1)."""
    n = 1
    while nfe_of(n + 1) <= nfe_budget:
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="samples per run")
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = ap.parse_args()
    torch.set_num_threads(1)  # small tensors: one intra-op thread is fastest

    process = build_process(ProcessConfig(kind="vp", schedule="linear", T=1000))
    mix = ring_mixture()
    oracle = GMMOracle.from_mixture(process, mix)
    x_T = torch.randn(args.n, 2, generator=torch.Generator().manual_seed(args.seed), dtype=torch.float64)
    floor = mixture_distance(mix, mix.sample(args.n, torch.Generator().manual_seed(args.seed + 1)))["kl"]

    rows: dict[str, dict[int, tuple[float, float, int | str]]] = {}
    t0 = time.perf_counter()
    for label, name, spacing, opts in DIFFLAB:
        spec = get_sampler(name)
        rows["difflab " + label] = {}
        for budget in args.nfe:
            n = largest_steps(budget, lambda k: count_nfe(spec, k, **opts))
            x = spec.fn(oracle, x_T, select_steps(process, n, spacing), generator=torch.Generator().manual_seed(1), **opts)
            d = mixture_distance(mix, x)
            rows["difflab " + label][budget] = (d["kl"], d["kl_se"], n)
    search_cost: dict[str, dict[int, int]] = {}
    for name in SEARCHED:
        label = f"difflab {name} (searched)"
        rows[label], search_cost[name] = {}, {}
        for budget in args.nfe:
            info: dict = {}
            steps = search_steps(oracle, budget, (2,), sampler=name, batch=SEARCH_BATCH, seed=args.seed + 1,
                                 dtype=torch.float64, callback=info.update)
            d = mixture_distance(mix, get_sampler(name).fn(oracle, x_T, steps))
            rows[label][budget], search_cost[name][budget] = (d["kl"], d["kl_se"], budget), info["nfe"]
    rows["difflab langevin (logsnr; levels x steps)"] = {}
    for budget in args.nfe:  # NFE = levels * n_steps_each + 1 (the final denoising step)
        levels = min(LANGEVIN_LEVELS, budget - 1)
        opts = {"epsilon": 2e-4, "n_steps_each": (budget - 1) // levels}
        x = get_sampler("langevin").fn(oracle, x_T, select_steps(process, levels, "logsnr"),
                                       generator=torch.Generator().manual_seed(1), **opts)
        d = mixture_distance(mix, x)
        rows["difflab langevin (logsnr; levels x steps)"][budget] = (d["kl"], d["kl_se"], f"{levels}x{opts['n_steps_each']}")
    rk45 = []
    for tol in RK45_TOLS:
        info: dict = {}
        x = get_sampler("ode-rk45").fn(oracle, x_T, [process.T - 1, 0], rtol=tol, atol=tol, callback=info.update)
        d = mixture_distance(mix, x)
        rk45.append((tol, info["nfe"], d["kl"], d["kl_se"]))
    for label, make, nfe_of in diffusers_schedulers():
        rows["diffusers " + label] = {}
        for budget in args.nfe:
            n = largest_steps(budget, nfe_of)
            d = mixture_distance(mix, run_diffusers(make(), oracle, x_T, n))
            rows["diffusers " + label][budget] = (d["kl"], d["kl_se"], n)
    elapsed = time.perf_counter() - t0

    best = {lib: {b: min(v[b][0] for k, v in rows.items() if k.startswith(lib)) for b in args.nfe} for lib in ("difflab", "diffusers")}
    sep = " | " if args.markdown else "  "
    head = ["sampler (spacing)"] + [f"NFE {b} (steps)" for b in args.nfe]
    print(f"kl to the truth (moment-projected KL, see oracle/distance.py), n = {args.n}, exact-sample floor {floor:.4f}; "
          f"2-D 8-mode ring, VP linear T=1000; {elapsed:.0f}s")
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
    for k, v in rows.items():
        cells = [f"{v[b][0]:.4f} ± {v[b][1]:.4f} ({v[b][2]})" for b in args.nfe]
        print(("| " if args.markdown else "") + sep.join([k] + cells) + (" |" if args.markdown else ""))
    for lib in ("difflab", "diffusers"):
        cells = [f"{best[lib][b]:.4f}" for b in args.nfe]
        print(("| " if args.markdown else "") + sep.join([f"**best {lib}**"] + cells) + (" |" if args.markdown else ""))
    ratio = [f"{best['difflab'][b] / best['diffusers'][b]:.3f}" for b in args.nfe]
    print(("| " if args.markdown else "") + sep.join(["**ratio difflab / diffusers**"] + ratio) + (" |" if args.markdown else ""))
    print("\node-rk45 (adaptive; rtol = atol):", "; ".join(f"{tol:g}: NFE {nfe}, kl {kl:.4f} ± {se:.4f}" for tol, nfe, kl, se in rk45))
    print(f"\nsearch cost (searched rows; NFE per example on a batch of {SEARCH_BATCH} x_T of seed {args.seed + 1}, "
          "teacher 200 + refinement runs):", "; ".join(f"{name}: " + ", ".join(f"NFE {b}: {c}" for b, c in cost.items())
                                                    for name, cost in search_cost.items()))
    if 10 in args.nfe and 20 in args.nfe:
        print(f"\nNFE 10: difflab best {best['difflab'][10]:.4f} vs diffusers best {best['diffusers'][10]:.4f} (target: <=); "
              f"diffusers best at NFE 20: {best['diffusers'][20]:.4f} (stretch target: difflab at NFE 10 <= this)")


if __name__ == "__main__":
    main()
