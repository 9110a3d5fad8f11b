"""Typed config of the noise process, and the factory that builds it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from difflab.configs import field
from difflab.errors import UserError
from difflab.process.base import NoiseProcess
from difflab.process.schedules import cosine_betas, geometric_sigmas, linear_betas
from difflab.process.vp import VEProcess, VPProcess


@dataclass(frozen=True)
class ProcessConfig:
    kind: Literal["vp", "ve"] = field("vp", help="forward process: 'vp' (DDPM, variance preserving) or 've' (NCSN, variance exploding)")
    schedule: Literal["linear", "cosine"] = field("linear", help="VP beta schedule: 'linear' (Ho et al.) or 'cosine' (Nichol & Dhariwal)")
    T: int = field(1000, help="number of diffusion steps (VP) or noise levels (VE)")
    beta_start: float = field(1e-4, help="linear schedule: beta_1 at T=1000 (scaled by 1000/T for other T)")
    beta_end: float = field(0.02, help="linear schedule: beta_T at T=1000 (scaled by 1000/T for other T)")
    cosine_s: float = field(0.008, help="cosine schedule: offset s of f(t) = cos((t/T + s)/(1 + s) pi/2)^2")
    sigma_min: float = field(0.01, help="VE: smallest noise level sigma_1")
    sigma_max: float = field(50.0, help="VE: largest noise level sigma_L (about the largest distance between data points)")

    def __post_init__(self):
        if self.T < 2:
            raise UserError(f"process.T must be at least 2; got {self.T}")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise UserError(f"need 0 < process.beta_start < process.beta_end < 1; got {self.beta_start}, {self.beta_end}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise UserError(f"need 0 < process.sigma_min < process.sigma_max; got {self.sigma_min}, {self.sigma_max}")


def build_process(cfg: ProcessConfig) -> NoiseProcess:
    """The process a config describes."""
    if cfg.kind == "ve":
        return VEProcess(geometric_sigmas(cfg.T, cfg.sigma_min, cfg.sigma_max))
    if cfg.schedule == "cosine":
        return VPProcess(cosine_betas(cfg.T, cfg.cosine_s))
    return VPProcess(linear_betas(cfg.T, cfg.beta_start, cfg.beta_end))
