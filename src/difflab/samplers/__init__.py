"""Samplers: plain functions over a Denoiser, one file per family, and a registry by name."""

from difflab.samplers.ancestral import ddpm
from difflab.samplers.ddim import ddim, ddim_step
from difflab.samplers.dpmsolver import dpmpp_2m, dpmpp_2s, dpmpp_3m
from difflab.samplers.inversion import invert, reconstruct, slerp
from difflab.samplers.langevin import langevin
from difflab.samplers.ode import euler, heun
from difflab.samplers.pc import pc
from difflab.samplers.registry import SAMPLERS, SamplerSpec, count_nfe, get_sampler, sampler_table
from difflab.samplers.rk45 import ode_rk45, solve_ivp_rk45
from difflab.samplers.search import search_steps
from difflab.samplers.sigma import prior_sample
from difflab.samplers.steps import SPACINGS, karras_sigmas, parse_timesteps, plan_steps, select_steps, timesteps
from difflab.samplers.unipc import unipc

__all__ = [
    "SAMPLERS", "SPACINGS", "SamplerSpec", "count_nfe", "ddim", "ddim_step", "ddpm", "dpmpp_2m", "dpmpp_2s", "dpmpp_3m",
    "euler", "get_sampler", "heun", "invert", "karras_sigmas", "langevin", "ode_rk45", "parse_timesteps", "pc", "prior_sample",
    "plan_steps", "reconstruct", "sampler_table", "search_steps", "select_steps", "slerp", "solve_ivp_rk45", "timesteps", "unipc",
]
