"""A network + a process + what the network predicts -> a Denoiser (Ho et al. 2020; Nichol & Dhariwal 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from difflab.configs import field
from difflab.denoiser.base import Prediction, as_timesteps, bcast, complete_prediction
from difflab.errors import UserError
from difflab.process import NoiseProcess

Parameterization = Literal["eps", "x0", "v", "mu"]
VarType = Literal["fixed_small", "fixed_large", "learned", "learned_range"]


@dataclass(frozen=True)
class DenoiserConfig:
    parameterization: Parameterization = field("eps", help="what the network predicts: 'eps' (noise, default), 'x0', 'v' (Salimans & Ho), or 'mu' (the posterior mean)")
    var_type: VarType = field("fixed_small", help="reverse variance: 'fixed_small' (beta_tilde), 'fixed_large' (beta), 'learned' (log-variance output), 'learned_range' (improved DDPM interpolation)")
    clip_x0: bool = field(True, help="clip the predicted x_0 to the data range [-1, 1] when sampling")

    @property
    def learn_sigma(self) -> bool:
        return self.var_type in ("learned", "learned_range")


class ModelDenoiser:
    """Turns network outputs into a Prediction, whatever the parameterisation and variance type.

    With a learned variance the network outputs 2C channels: [prediction, variance output].
    `learned_range`: log Sigma = v log beta_{t->s} + (1 - v) log beta_tilde_{t->s}, v = (out + 1)/2
    (Nichol & Dhariwal 2021, Eq. 15). `learned`: the output is log Sigma itself (Ho et al.'s ablation).
    """

    def __init__(self, net: nn.Module, process: NoiseProcess, cfg: DenoiserConfig = DenoiserConfig(), clip_x0: bool | None = None):
        self.net = net
        self.process = process
        self.cfg = cfg
        self.clip_x0 = cfg.clip_x0 if clip_x0 is None else clip_x0
        if cfg.parameterization == "mu" and process.kind != "vp":
            raise UserError("parameterization 'mu' is defined for the VP (DDPM) process only; use 'eps' with process.kind 've'")

    def raw(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Network output split into (prediction, variance output or None)."""
        out = self.net(x, self.process.model_time(t).to(x.device), y)
        if self.cfg.learn_sigma:
            c = x.shape[1]
            if out.shape[1] != 2 * c:
                raise UserError(f"var_type '{self.cfg.var_type}' needs a network with {2 * c} output channels (learn_sigma); it has {out.shape[1]}")
            return out[:, :c], out[:, c:]
        return out, None

    def __call__(self, x: Tensor, t: Tensor | int, y: Tensor | None = None, s: Tensor | int | None = None) -> Prediction:
        t = as_timesteps(t, x.shape[0])
        s = t - 1 if s is None else as_timesteps(s, x.shape[0])
        out, var_out = self.raw(x, t, y)
        x0, eps = self.x0_eps(x, t, out)
        return complete_prediction(self.process, x, t, s, x0, eps, self.log_var(var_out, x, t, s))

    def x0_eps(self, x: Tensor, t: Tensor, out: Tensor) -> tuple[Tensor, Tensor]:
        """(x0, eps) from the network's prediction channels, with optional clipping of x0."""
        p, kind = self.process, self.cfg.parameterization
        if kind == "eps":
            eps = out
            x0 = p.x0_from_eps(x, t, eps)
        elif kind == "x0":
            x0 = out
            eps = p.eps_from_x0(x, t, x0)
        elif kind == "v":
            x0, eps = p.x0_eps_from_v(x, t, out)
        else:  # mu: the network's output is the mean of the step t -> t-1
            x0 = p.x0_from_mean(x, t, out)
            eps = p.eps_from_x0(x, t, x0)
        if self.clip_x0:
            x0 = x0.clamp(-1, 1)
            eps = p.eps_from_x0(x, t, x0)
        return x0, eps

    def log_var(self, var_out: Tensor | None, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """log Sigma_theta for the step t -> s."""
        p, kind = self.process, self.cfg.var_type
        log_small = bcast(p.posterior_log_var_clipped(t, s), x)
        if kind == "fixed_small":
            return log_small.expand_as(x)
        # 'fixed large' uses beta_t, but beta_tilde_1 at the final step, as improved DDPM does, so L_0 stays finite.
        large = p.transition_var(t, s)
        large = torch.where(torch.as_tensor(s) < 0, p.posterior_var(torch.ones_like(t), torch.zeros_like(t)), large)
        log_large = bcast(large.log(), x)
        if kind == "fixed_large":
            return log_large.expand_as(x)
        if kind == "learned":
            return var_out
        frac = (var_out + 1) / 2
        return frac * log_large + (1 - frac) * log_small
