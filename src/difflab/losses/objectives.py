"""Training objectives of diffusion models: L_simple, L_vlb and improved DDPM's L_hybrid, with their timestep sampling.

Scaling. In bits/dim the bound is L_vlb = L_0 + sum_{t>0} L_{t-1} + L_T (Ho et al. Eq. 5): the T per-step
terms returned by `vlb_terms` (index 0 = the decoder NLL, index t > 0 = the KL of the step t -> t-1)
plus the prior term, which is constant in the parameters and left out. With t ~ Uniform{0..T-1} and
L_t the term at the sampled t, T * L_t is an unbiased per-example estimate of that sum; it is the
"vlb" loss here (improved DDPM's RESCALED_KL). "hybrid" is L_simple + lambda * T * L_t with
lambda = `vlb_weight` = 0.001: at T = 1000 exactly improved DDPM's `mse + vb` (Nichol & Dhariwal 2021,
Eq. 16), and at any T its RESCALED_MSE `mse + vb * T / 1000`. With importance sampling every
per-example loss is multiplied by 1 / (T p_t), which keeps all three estimates unbiased.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from difflab.configs import field
from difflab.denoiser import DenoiserConfig, ModelDenoiser, Prediction, complete_prediction
from difflab.errors import UserError
from difflab.losses.gaussian import mean_flat
from difflab.losses.timesteps import LossSecondMomentTimesteps, UniformTimesteps
from difflab.losses.vlb import vlb_terms
from difflab.process import NoiseProcess

LossType = Literal["simple", "vlb", "hybrid"]
TimestepSampling = Literal["uniform", "loss_aware"]


@dataclass(frozen=True)
class LossConfig:
    type: LossType = field(
        "simple",
        help="'simple': MSE to the parameterisation's target (eps, x0, v, or the posterior mean mu_tilde for 'mu'; Ho et al. Eq. 14); "
        "'vlb': T * L_t, the variational bound in bits/dim (trains mean and variance); "
        "'hybrid': simple + vlb_weight * T * L_t with the mean stop-gradient, so the bound only trains a learned variance (improved DDPM Eq. 16)",
    )
    timestep_sampling: TimestepSampling = field(
        "uniform",
        help="'uniform' t ~ U{0..T-1}; 'loss_aware': improved DDPM's importance sampling p_t ∝ sqrt(E[L_t^2]) over the last loss_history losses per t, weighted by 1/(T p_t)",
    )
    vlb_weight: float = field(0.001, help="lambda of L_hybrid = L_simple + lambda * T * L_t (0.001 at T = 1000 is improved DDPM's mse + vb)")
    loss_history: int = field(10, help="loss_aware: losses kept per timestep; sampling is uniform until every t has this many")
    uniform_prob: float = field(0.001, help="loss_aware: mass of the uniform distribution mixed into p_t so no timestep is starved")

    def __post_init__(self):
        if self.type not in ("simple", "vlb", "hybrid"):
            raise UserError(f"loss.type must be one of 'simple', 'vlb', 'hybrid'; got {self.type!r}")
        if self.timestep_sampling not in ("uniform", "loss_aware"):
            raise UserError(f"loss.timestep_sampling must be one of 'uniform', 'loss_aware'; got {self.timestep_sampling!r}")
        if not self.vlb_weight >= 0:
            raise UserError(f"loss.vlb_weight must be >= 0; got {self.vlb_weight}")
        if self.loss_history < 1:
            raise UserError(f"loss.loss_history must be at least 1; got {self.loss_history}")
        if not 0 <= self.uniform_prob <= 1:
            raise UserError(f"loss.uniform_prob must lie in [0, 1]; got {self.uniform_prob}")


class LossRecord(NamedTuple):
    """What the last call saw, per example (B,), detached: for logging and the loss-aware update."""

    t: Tensor  # sampled timesteps, long, CPU
    weights: Tensor  # importance weights 1/(T p_t), float64, CPU
    loss: Tensor  # unweighted per-example objective (what `update` expects)
    mse: Tensor | None  # L_simple part, or None for 'vlb'
    vlb: Tensor | None  # L_t in bits/dim (not multiplied by T), or None for 'simple'


def simple_target(process: NoiseProcess, parameterization: str, x0: Tensor, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """Regression target of L_simple: eps (Ho et al. Eq. 14), x_0, v (Salimans & Ho 2022) or mu_tilde(x_t, x_0) (Eq. 8)."""
    if parameterization == "eps":
        return eps
    if parameterization == "x0":
        return x0
    if parameterization == "v":
        return process.v_target(x0, t, eps)
    if parameterization == "mu":
        return process.posterior_mean(x0, x_t, t, t - 1)
    raise ValueError(f"unknown parameterization {parameterization!r}; valid: 'eps', 'x0', 'v', 'mu'")


class DiffusionLoss:
    """Loss(net, x0, y) -> per-example loss (B,): draws t and eps, noises x0, scores the network (DESIGN's `Loss`).

    `loss(net, x0, y)` = `compute(net, x0, y, **draw(B, x0.shape[1:], generator))`: t (B,) from the timestep
    sampler, then eps ~ N(0, I) (float32, CPU, moved to x0's device and dtype). The network sees x_t and
    `process.model_time(t)`.
    The returned loss is importance-weighted; `last` holds the unweighted parts for logging and for
    `update`, which the trainer must call after each step when `needs_update` is true.
    """

    def __init__(self, cfg: LossConfig, process: NoiseProcess, denoiser_cfg: DenoiserConfig, *, generator: torch.Generator | None = None):
        if cfg.type == "hybrid" and not denoiser_cfg.learn_sigma:
            raise UserError(
                f"loss.type 'hybrid' uses the bound only to train a learned variance, but denoiser.var_type is "
                f"'{denoiser_cfg.var_type}'; use var_type 'learned_range' or 'learned', or loss.type 'simple'"
            )
        if cfg.type == "simple" and denoiser_cfg.learn_sigma:
            raise UserError(
                f"loss.type 'simple' does not train the variance channels of denoiser.var_type '{denoiser_cfg.var_type}'; "
                "use loss.type 'hybrid' (or 'vlb'), or var_type 'fixed_small' / 'fixed_large'"
            )
        if denoiser_cfg.parameterization == "mu" and process.kind != "vp":
            raise UserError("parameterization 'mu' is defined for the VP (DDPM) process only; use 'eps' with process.kind 've'")
        self.cfg = cfg
        self.process = process
        self.denoiser_cfg = denoiser_cfg
        self.generator = generator
        self.T = process.T
        if cfg.timestep_sampling == "loss_aware":
            self.sampler: UniformTimesteps | LossSecondMomentTimesteps = LossSecondMomentTimesteps(self.T, cfg.loss_history, cfg.uniform_prob)
        else:
            self.sampler = UniformTimesteps(self.T)
        self.last: LossRecord | None = None

    @property
    def needs_update(self) -> bool:
        """True when the timestep distribution learns from the losses (the trainer then calls `update`)."""
        return self.cfg.timestep_sampling == "loss_aware"

    def __call__(self, net: nn.Module, x0: Tensor, y: Tensor | None = None, *, generator: torch.Generator | None = None) -> Tensor:
        """Per-example loss (B,), importance-weighted: `draw` then `compute`; a per-call generator overrides the construction one."""
        draws = self.draw(x0.shape[0], tuple(x0.shape[1:]), self.generator if generator is None else generator)
        return self.compute(net, x0, y, **draws)

    def draw(self, n: int, x_shape: tuple[int, ...], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The randomness of a step for n examples, on the CPU: t (n,) long and weights (n,) float64 from the
        timestep sampler, then eps (n, *x_shape) float32 ~ N(0, I), in that order from `generator`.

        Drawing for a whole global batch and slicing it per rank / micro-batch makes N ranks compute what
        one process would (the trainer's scheme); every tensor has leading dimension n.
        """
        t, weights = self.sampler.sample(n, generator)
        eps = torch.randn((n, *x_shape), generator=generator, dtype=torch.float32)
        return {"t": t, "weights": weights, "eps": eps}

    def compute(self, net: nn.Module, x0: Tensor, y: Tensor | None = None, *, t: Tensor, weights: Tensor, eps: Tensor) -> Tensor:
        """Per-example loss (B,) for given draws: x_t = q_sample(x0, t, eps), then L_simple / T L_t / hybrid, times weights."""
        t = t.long().cpu()  # the process tables live on the CPU
        eps = eps.to(device=x0.device, dtype=x0.dtype)
        x_t = self.process.q_sample(x0, t, eps)
        # Training sees the raw prediction: no clipping of x0 (improved DDPM uses clip_denoised=False here).
        denoiser = ModelDenoiser(net, self.process, self.denoiser_cfg, clip_x0=False)
        out, var_out = denoiser.raw(x_t, t, y)
        mse = vlb = None
        if self.cfg.type in ("simple", "hybrid"):
            target = simple_target(self.process, self.denoiser_cfg.parameterization, x0, x_t, t, eps)
            mse = mean_flat((out - target) ** 2)
        if self.cfg.type in ("vlb", "hybrid"):
            # Hybrid: the bound sees a detached mean, so it only trains the variance (improved DDPM Sec. 3.1).
            mean_out = out.detach() if self.cfg.type == "hybrid" else out
            vlb = vlb_terms(self._step_prediction(denoiser, x_t, t, mean_out, var_out), x0, x_t, t, process=self.process)
        if self.cfg.type == "simple":
            loss = mse
        elif self.cfg.type == "vlb":
            loss = self.T * vlb
        else:
            loss = mse + self.cfg.vlb_weight * self.T * vlb
        self.last = LossRecord(
            t=t, weights=weights.detach().cpu(), loss=loss.detach(),
            mse=None if mse is None else mse.detach(), vlb=None if vlb is None else vlb.detach(),
        )
        return loss * weights.to(device=loss.device, dtype=loss.dtype)

    def _step_prediction(self, denoiser: ModelDenoiser, x_t: Tensor, t: Tensor, out: Tensor, var_out: Tensor | None) -> Prediction:
        """The Prediction of the step t -> t-1 from already-computed network outputs (no second forward pass)."""
        s = t - 1
        x0_hat, eps_hat = denoiser.x0_eps(x_t, t, out)
        return complete_prediction(self.process, x_t, t, s, x0_hat, eps_hat, denoiser.log_var(var_out, x_t, t, s))

    def update(self, t: Tensor, losses: Tensor) -> None:
        """Feed the loss-aware sampler (t, unweighted losses) = all-gathered `last.t`, `last.loss`; no-op when uniform.

        Call on every rank with identical, identically ordered tensors (e.g. torch.cat of all_gather in rank
        order), after each optimisation step, so every rank keeps the same sampler. The recorded loss is the
        unweighted per-example objective, as improved DDPM's trainer feeds its sampler.
        """
        self.sampler.update(t.detach().cpu(), losses.detach().to(device="cpu", dtype=torch.float64))

    def state_dict(self) -> dict[str, Tensor]:
        """Sampler history as plain tensors ({} for uniform); the generator's state is the trainer's to save."""
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.sampler.load_state_dict(state)


def build_loss(cfg: LossConfig, process: NoiseProcess, denoiser_cfg: DenoiserConfig, *, generator: torch.Generator | None = None) -> DiffusionLoss:
    """The loss a config describes, for a network trained with `denoiser_cfg` on `process`."""
    return DiffusionLoss(cfg, process, denoiser_cfg, generator=generator)
