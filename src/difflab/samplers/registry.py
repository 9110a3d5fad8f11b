"""Samplers by name, with everything a caller may ask of one: its options, its cost, its recommended settings and the
guidance it takes. Each entry is a plain function with the shared signature
`fn(denoiser, x_T, steps, *, y=None, generator=None, callback=None, **options) -> x_0`.

The options of a sampler are its keyword-only parameters (less y, generator, callback): their names, types and
defaults are read from the function itself, so the schema the CLI validates `--sampler-opt key=value` against can
never drift from what the function accepts.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from difflab.errors import UserError
from difflab.samplers.ancestral import ddpm
from difflab.samplers.consistency import consistency
from difflab.samplers.ddim import ddim
from difflab.samplers.dpmsolver import dpmpp_2m, dpmpp_2s, dpmpp_3m
from difflab.samplers.langevin import langevin
from difflab.samplers.ode import euler, heun
from difflab.samplers.pc import pc
from difflab.samplers.rk45 import ode_rk45
from difflab.samplers.unipc import unipc

SHARED_KEYWORDS = ("y", "generator", "callback")  # every sampler's; not options


@dataclass(frozen=True)
class SamplerOption:
    """One keyword option of a sampler, as its signature declares it."""

    name: str
    type: type  # float, int, bool or str
    default: Any
    choices: tuple[str, ...] | None = None  # for a Literal[...] option

    def parse(self, raw: Any, sampler: str) -> Any:
        """`raw` (a CLI string or a Python value) as this option's type; a one-line error otherwise."""
        where = f"sampler option {sampler}.{self.name}"
        if self.choices is not None:
            if raw not in self.choices:
                raise UserError(f"{where} must be one of {', '.join(self.choices)}; got {raw!r}")
            return raw
        if self.type is bool:
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.lower() in ("true", "false", "1", "0"):
                return raw.lower() in ("true", "1")
            raise UserError(f"{where} must be true or false; got {raw!r}")
        try:
            value = self.type(raw) if not (self.type is int and isinstance(raw, float) and not raw.is_integer()) else None
        except (TypeError, ValueError):
            value = None
        if value is None or isinstance(raw, bool) or (self.type is int and isinstance(raw, str) and not raw.strip().lstrip("+-").isdigit()):
            raise UserError(f"{where} must be {'an integer' if self.type is int else 'a number'}; got {raw!r}")
        if self.type is float and math.isnan(value):
            raise UserError(f"{where} must be a number, not NaN")
        if value < 0:  # every numeric option of the registered samplers (eta, order, snr, churn, tolerances...) is >= 0
            raise UserError(f"{where} must be >= 0; got {value}")
        return value


def options_of(fn: Callable) -> dict[str, SamplerOption]:
    """The keyword-only parameters of `fn` (less the shared ones) as options, in signature order."""
    hints = typing.get_type_hints(fn)
    out = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.name in SHARED_KEYWORDS:
            continue
        tp = hints[p.name]
        if typing.get_origin(tp) is Literal:
            out[p.name] = SamplerOption(p.name, str, p.default, tuple(typing.get_args(tp)))
        elif tp in (float, int, bool, str):
            out[p.name] = SamplerOption(p.name, tp, p.default)
        else:
            raise TypeError(f"option {p.name} of {fn.__name__} has type {tp!r}; sampler options are float, int, bool, str or Literal")
    return out


@dataclass(frozen=True)
class Guided:
    """How a sampler takes guidance (guidance/support.py): the Prediction fields it reads, and the form of classifier
    guidance those fields carry. A sampler without it is refused with guidance."""

    reads: str
    classifier_form: str


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    fn: Callable
    nfe_per_step: int  # network evaluations per visited timestep (at default options)
    stochastic: bool
    summary: str
    recommended_steps: int = 50  # within tolerance of the truth on the oracle at these steps (with default options)
    recommended_spacing: str = "leading"
    # NFE of a whole run from (number of steps, options); None: adaptive, known only after the run.
    nfe: Callable[[int, dict], int | None] | None = None
    guided: Guided | None = None

    @property
    def options(self) -> dict[str, SamplerOption]:
        return options_of(self.fn)

    def parse_options(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """Validated options (CLI strings are parsed to the option's type); unknown keys list the valid ones."""
        schema = self.options
        out = {}
        for key, raw in (given or {}).items():
            if key not in schema:
                valid = ", ".join(schema) if schema else "none"
                raise UserError(f"sampler '{self.name}' has no option '{key}'; its options: {valid}")
            out[key] = schema[key].parse(raw, self.name)
        return out


def _heun_nfe(n: int, o: dict) -> int:
    return 2 * n - 1  # no correction on the final step to sigma = 0


def _langevin_nfe(n: int, o: dict) -> int:
    return n * o.get("n_steps_each", options_of(langevin)["n_steps_each"].default) + (1 if o.get("denoise", True) else 0)


def _pc_nfe(n: int, o: dict) -> int:
    return n + (n - 1) * o.get("n_corrector", options_of(pc)["n_corrector"].default)  # no corrector after the last step to x_0


_X0 = Guided("x0", "eps (Algorithm 2)")

# Recommended (steps, spacing): within tolerance of the truth on the oracle with the function's default options, both
# the 2-D ring and the 64-D mixture (tests/test_samplers_conformance.py); docs/benchmarks.md has the error at every NFE.
# `guided`: checked to (1) pass y on to every denoiser call and (2) read only Prediction fields (guidance/support.py).
SAMPLERS: dict[str, SamplerSpec] = {
    s.name: s
    for s in (
        SamplerSpec("ddpm", ddpm, 1, True, "ancestral sampling, Ho et al. 2020 Algorithm 2 (respaced on a subsequence)",
                    1000, "linspace", guided=Guided("mean, log_var", "ancestral: mean shift (Algorithm 1)")),
        SamplerSpec("ddim", ddim, 1, False, "DDIM, Song et al. 2021; eta=0 deterministic, eta=1 matches DDPM",
                    50, "logsnr-jump", guided=Guided("x0, eps", "eps (Algorithm 2)")),
        # gamma = 0 by default, where it is DDIM and so correct for any Denoiser; consistency students set gamma = 1.
        SamplerSpec("consistency", consistency, 1, False, "multistep consistency sampling, Song et al. 2023 Algorithm 1 "
                    "(gamma=1; CTM's gamma-sampling, gamma=0 is DDIM); for consistency students", 50, "logsnr-jump",
                    guided=Guided("x0, eps", "eps (Algorithm 2)")),
        SamplerSpec("langevin", langevin, 50, True, "annealed Langevin dynamics, Song & Ermon 2019 Algorithm 1 (n_steps_each per level)",
                    10, "logsnr", _langevin_nfe, Guided("eps (as the score -eps/sigma), x0 for the final denoising", "eps/score (Algorithm 2)")),
        SamplerSpec("pc", pc, 2, True, "predictor-corrector, Song et al. 2021 Algorithms 2-3 (reverse-diffusion/ancestral + Langevin at snr)",
                    100, "logsnr", _pc_nfe,
                    Guided("score (predictor 'reverse_diffusion') or mean, log_var ('ancestral'); score in the corrector",
                           "eps/score (Algorithm 2); the ancestral predictor gets the mean shift (Algorithm 1)")),
        SamplerSpec("euler", euler, 1, False, "Euler on the probability-flow ODE in sigma (EDM; optional churn)",
                    50, "logsnr-jump", guided=Guided("x0", "eps (Algorithm 2): x0 is recomputed from the guided eps")),
        SamplerSpec("heun", heun, 2, False, "Heun, Karras et al. 2022 Algorithm 1 (2 NFE per step, 1 on the last; optional churn)",
                    30, "karras", _heun_nfe, _X0),
        SamplerSpec("dpmpp-2m", dpmpp_2m, 1, False, "DPM-Solver++(2M), Lu et al. 2022 multistep, 2nd order", 20, "logsnr-jump", guided=_X0),
        SamplerSpec("dpmpp-3m", dpmpp_3m, 1, False, "DPM-Solver++(3M), Lu et al. 2022 multistep, 3rd order", 20, "logsnr-jump", guided=_X0),
        SamplerSpec("dpmpp-2s", dpmpp_2s, 2, False, "DPM-Solver++(2S), Lu et al. 2022 singlestep, 2nd order (midpoint on the grid)",
                    10, "logsnr-jump", _heun_nfe, _X0),
        SamplerSpec("unipc", unipc, 1, False, "UniPC, Zhao et al. 2023 (order 2/3, bh1/bh2, corrector at no extra NFE)",
                    15, "logsnr-jump", guided=_X0),
        SamplerSpec("ode-rk45", ode_rk45, 6, False, "adaptive Dormand-Prince RK45 on the probability-flow ODE (rtol/atol; "
                    "NFE adaptive; uses the first and last step only)", 2, "linspace", lambda n, o: None,
                    Guided("eps, interpolated in log sigma between the two neighbouring timesteps (guided at both)", "eps (Algorithm 2)")),
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


def sampler_table() -> list[dict]:
    """One row per sampler for `difflab samplers`: name, NFE per step, stochastic, recommended steps/spacing, their NFE,
    options with defaults, whether it takes guidance, summary."""
    rows = []
    for s in SAMPLERS.values():
        rows.append({"name": s.name, "nfe_per_step": s.nfe_per_step, "stochastic": s.stochastic, "steps": s.recommended_steps,
                     "spacing": s.recommended_spacing, "nfe": count_nfe(s, s.recommended_steps),
                     "options": {k: o.default for k, o in s.options.items()}, "guidance": s.guided is not None, "summary": s.summary})
    return rows
