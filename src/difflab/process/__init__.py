"""Noise processes: closed forms of the forward process (VP/DDPM and VE/NCSN)."""

from difflab.process.base import NoiseProcess
from difflab.process.config import ProcessConfig, build_process
from difflab.process.schedules import cosine_betas, geometric_sigmas, linear_betas
from difflab.process.vp import VEProcess, VPProcess

__all__ = [
    "NoiseProcess", "ProcessConfig", "VEProcess", "VPProcess", "build_process",
    "cosine_betas", "geometric_sigmas", "linear_betas",
]
