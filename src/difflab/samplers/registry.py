"""Samplers by name. Each entry is a plain function with the shared signature
`fn(denoiser, x_T, steps, *, y=None, generator=None, callback=None, **options) -> x_0`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from difflab.errors import UserError
from difflab.samplers.ancestral import ddpm
from difflab.samplers.ddim import ddim
from difflab.samplers.dpmsolver import dpmpp_2m, dpmpp_2s, dpmpp_3m
from difflab.samplers.langevin import langevin
from difflab.samplers.ode import euler, heun
from difflab.samplers.pc import pc
from difflab.samplers.rk45 import ode_rk45
from difflab.samplers.unipc import unipc


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    fn: Callable
    nfe_per_step: int  # network evaluations per visited timestep (at default options)
    stochastic: bool
    summary: str
    recommended_steps: int = 50  # within tolerance of the truth on the oracle at these steps
    recommended_spacing: str = "leading"
    recommended_options: tuple[tuple[str, object], ...] = ()  # keyword options of that recommendation
    # NFE of a whole run from (number of steps, options); None: adaptive, known only after the run.
    nfe: Callable[[int, dict], int | None] | None = None


def _heun_nfe(n: int, o: dict) -> int:
    return 2 * n - 1  # no correction on the final step to sigma = 0


def _langevin_nfe(n: int, o: dict) -> int:
    return n * o.get("n_steps_each", 100) + (1 if o.get("denoise", True) else 0)


def _pc_nfe(n: int, o: dict) -> int:
    return n + (n - 1) * o.get("n_corrector", 1)  # no corrector after the last step to x_0


def _spec(name, fn, nfe_per_step, stochastic, summary, steps, spacing, options=(), nfe=None) -> SamplerSpec:
    return SamplerSpec(name, fn, nfe_per_step, stochastic, summary, steps, spacing, tuple(options), nfe)


# Recommended (steps, spacing, options): within tolerance of the truth on the oracle, both the 2-D ring and the
# 64-D mixture (tests/test_samplers_conformance.py); docs/benchmarks.md has the error at every NFE.
SAMPLERS: dict[str, SamplerSpec] = {
    s.name: s
    for s in (
        _spec("ddpm", ddpm, 1, True, "ancestral sampling, Ho et al. 2020 Algorithm 2 (respaced on a subsequence)",
              1000, "linspace"),
        _spec("ddim", ddim, 1, False, "DDIM, Song et al. 2021; eta=0 deterministic, eta=1 matches DDPM",
              50, "logsnr-jump"),
        _spec("langevin", langevin, 100, True, "annealed Langevin dynamics, Song & Ermon 2019 Algorithm 1 (n_steps_each per level)",
              10, "logsnr", (("epsilon", 2e-4), ("n_steps_each", 50)), _langevin_nfe),
        _spec("pc", pc, 2, True, "predictor-corrector, Song et al. 2021 Algorithms 2-3 (reverse-diffusion/ancestral + Langevin at snr)",
              100, "logsnr", nfe=_pc_nfe),
        _spec("euler", euler, 1, False, "Euler on the probability-flow ODE in sigma (EDM; optional churn)",
              50, "logsnr-jump"),
        _spec("heun", heun, 2, False, "Heun, Karras et al. 2022 Algorithm 1 (2 NFE per step, 1 on the last; optional churn)",
              30, "karras", nfe=_heun_nfe),
        _spec("dpmpp-2m", dpmpp_2m, 1, False, "DPM-Solver++(2M), Lu et al. 2022 multistep, 2nd order",
              20, "logsnr-jump"),
        _spec("dpmpp-3m", dpmpp_3m, 1, False, "DPM-Solver++(3M), Lu et al. 2022 multistep, 3rd order",
              20, "logsnr-jump"),
        _spec("dpmpp-2s", dpmpp_2s, 2, False, "DPM-Solver++(2S), Lu et al. 2022 singlestep, 2nd order (midpoint on the grid)",
              10, "logsnr-jump", nfe=_heun_nfe),
        _spec("unipc", unipc, 1, False, "UniPC, Zhao et al. 2023 (order 2/3, bh1/bh2, corrector at no extra NFE)",
              15, "logsnr-jump"),
        _spec("ode-rk45", ode_rk45, 6, False, "adaptive Dormand-Prince RK45 on the probability-flow ODE (rtol/atol; "
              "NFE adaptive; uses the first and last step only)", 2, "linspace", nfe=lambda n, o: None),
    )
}


def get_sampler(name: str) -> SamplerSpec:
    """Look a sampler up by name; the error lists the valid names."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise UserError(f"unknown sampler '{name}'; valid samplers: {', '.join(SAMPLERS)}") from None


def count_nfe(spec: SamplerSpec, n_steps: int, **options) -> int | None:
    """Network evaluations of one run over n_steps timesteps with these options; None for adaptive samplers."""
    return spec.nfe(n_steps, options) if spec.nfe is not None else spec.nfe_per_step * n_steps


def sampler_table() -> list[tuple[str, int, bool, str]]:
    """(name, nfe_per_step, stochastic, summary) of every sampler, for `difflab samplers`."""
    return [(s.name, s.nfe_per_step, s.stochastic, s.summary) for s in SAMPLERS.values()]
