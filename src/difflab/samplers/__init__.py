"""Samplers: plain functions over a Denoiser, one file per family, and a registry by name."""

from difflab.samplers.ancestral import ddpm
from difflab.samplers.ddim import ddim, ddim_step
from difflab.samplers.registry import SAMPLERS, SamplerSpec, get_sampler
from difflab.samplers.steps import SPACINGS, timesteps

__all__ = ["SAMPLERS", "SPACINGS", "SamplerSpec", "ddim", "ddim_step", "ddpm", "get_sampler", "timesteps"]
