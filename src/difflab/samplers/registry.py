"""Samplers by name. Each entry is a plain function with the shared signature
`fn(denoiser, x_T, steps, *, y=None, generator=None, callback=None, **options) -> x_0`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from difflab.errors import UserError
from difflab.samplers.ancestral import ddpm
from difflab.samplers.ddim import ddim


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    fn: Callable
    nfe_per_step: int  # network evaluations per visited timestep
    stochastic: bool
    summary: str


SAMPLERS: dict[str, SamplerSpec] = {
    s.name: s
    for s in (
        SamplerSpec("ddpm", ddpm, 1, True, "ancestral sampling, Ho et al. 2020 Algorithm 2 (respaced on a subsequence)"),
        SamplerSpec("ddim", ddim, 1, False, "DDIM, Song et al. 2021; eta=0 deterministic, eta=1 matches DDPM"),
    )
}


def get_sampler(name: str) -> SamplerSpec:
    """Look a sampler up by name; the error lists the valid names."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise UserError(f"unknown sampler '{name}'; valid samplers: {', '.join(SAMPLERS)}") from None
