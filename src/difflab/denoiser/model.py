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
        p = self.process
        # Unit-variance network input x_t / (a_t sqrt(1 + sigma_t^2)) (EDM's c_in): the identity for VP, and for VE it
        # keeps inputs of scale sigma_max from swamping the network (NCSN-style nets otherwise see |x| ~ 50).
        x_in = x if p.kind == "vp" else x / bcast(p.a(t) * (1 + p.sigma(t) ** 2).sqrt(), x)
        out = self.net(x_in, p.model_time(t).to(x.device), y)
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
        """(x0, eps) from the network's prediction channels at integer t, with optional clipping of x0."""
        p = self.process
        if self.cfg.parameterization == "mu":  # the output is the mean of the step t -> t-1
            x0 = p.x0_from_mean(x, t, out)
            eps = p.eps_from_x0(x, t, x0)
            if self.clip_x0:
                x0 = x0.clamp(-1, 1)
                eps = p.eps_from_x0(x, t, x0)
            return x0, eps
        return self._x0_eps_hat(x / bcast(p.a(t), x), bcast(p.sigma(t), x), out)

    def _x0_eps_hat(self, x_hat: Tensor, sigma: Tensor, out: Tensor) -> tuple[Tensor, Tensor]:
        """(x0, eps) in the coordinates x_hat = x_t / a_t = x0 + sigma eps, for the eps, x0 and v parameterisations."""
        kind = self.cfg.parameterization
        if kind == "eps":
            eps = out
            x0 = x_hat - sigma * eps
        elif kind == "x0":
            x0 = out
            eps = (x_hat - x0) / sigma
        else:  # v = cos(phi) eps - sin(phi) x0 with cos = 1/sqrt(1+sigma^2), sin = sigma/sqrt(1+sigma^2) (Salimans & Ho 2022)
            norm = (1 + sigma**2).sqrt()
            c, s = 1 / norm, sigma / norm
            z = x_hat / norm  # = cos x0 + sin eps
            x0, eps = c * z - s * out, s * z + c * out
        if self.clip_x0:
            x0 = x0.clamp(-1, 1)
            eps = (x_hat - x0) / sigma
        return x0, eps

    def at_sigma(self, x_hat: Tensor, sigma: float | Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(x0, eps) at a continuous noise level sigma, for the adaptive ODE solver and likelihoods.

        The network is evaluated at the fractional timestep whose log sigma interpolates the process table
        (its time input interpolates `timestep_map` likewise), on x_t = a(sigma) x_hat: a continuous
        extension of a discretely trained network that is exact on the grid (cf. Karras et al. 2022, App. C).
        Differentiable in x_hat (the ODE likelihood takes div eps); samplers call it under torch.no_grad.
        """
        if self.cfg.parameterization == "mu":
            raise UserError("a 'mu'-parameterised model is tied to its discrete steps; use a fixed-step sampler, not ode-rk45")
        p = self.process
        b = x_hat.shape[0]
        sig = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).expand(b)
        t_frac = p.fractional_t(sig)
        lo = t_frac.floor().long().clamp(0, p.T - 1)
        hi = (lo + 1).clamp(max=p.T - 1)
        w = (t_frac - lo.double()).float()
        model_t = (1 - w) * p.model_time(lo) + w * p.model_time(hi)
        x = x_hat / bcast((1 + sig**2).sqrt(), x_hat)  # = a(sigma) x_hat for VP, the normalised input for VE (see `raw`)
        out = self.net(x, model_t.to(x.device), y)
        if self.cfg.learn_sigma:
            out = out[:, : x.shape[1]]
        return self._x0_eps_hat(x_hat, bcast(sig, x_hat), out)

    def log_var(self, var_out: Tensor | None, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """log Sigma_theta for the step t -> s."""
        p, kind = self.process, self.cfg.var_type
        log_small = bcast(p.posterior_log_var_clipped(t, s), x)
        if kind == "fixed_small":
            return log_small.expand_as(x)
        large = p.transition_var(t, s)
        if kind == "fixed_large":
            # beta_t, but beta_tilde_1 at the final step, as improved DDPM does, so L_0 stays finite.
            large = torch.where(torch.as_tensor(s) < 0, p.posterior_var(torch.ones_like(t), torch.zeros_like(t)), large)
            return bcast(large.log(), x).expand_as(x)
        if kind == "learned":
            return var_out
        # learned_range interpolates between log beta_tilde_t (clipped) and log beta_t at every t, the final step
        # included (Nichol & Dhariwal 2021, Eq. 15): its range there is [log beta_tilde_1, log beta_1], not a point.
        log_large = bcast(large.log(), x)
        frac = (var_out + 1) / 2
        return frac * log_large + (1 - frac) * log_small
