"""Exponential moving average of parameters (Polyak averaging; DDPM uses rate 0.9999), with k-diffusion's warm-up."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

# k-diffusion's EMAWarmup defaults: power 2/3 reaches 0.999 at 31.6k steps and 0.9999 at 1M, 3/4 at 10k and 215k
# (its advice: 2/3 for runs of ~1M steps, 3/4 for shorter ones). TrainConfig repeats them (it does not import torch).
DEFAULT_POWER = 2 / 3
DEFAULT_INV_GAMMA = 1.0


def ema_decay(step: int, rate: float, power: float = DEFAULT_POWER, inv_gamma: float = DEFAULT_INV_GAMMA) -> float:
    """Decay of update `step` (0-based): min(rate, 1 - (1 + step/inv_gamma)^-power), k-diffusion's EMAWarmup (Crowson); power 0: `rate`."""
    if power == 0:
        return rate  # no warm-up: exactly the constant rate of the old EMA, so such runs are unchanged bit for bit
    # Python floats (float64) of the step alone: every rank, and a resumed run, computes the same decay.
    return min(rate, max(0.0, 1.0 - (1.0 + step / inv_gamma) ** -power))


class EMA:
    """Keeps `shadow = d * shadow + (1 - d) * param` after each optimizer step, d = ema_decay(step, ...); rate 0 tracks the model exactly."""

    def __init__(self, model: nn.Module, rate: float, power: float = DEFAULT_POWER, inv_gamma: float = DEFAULT_INV_GAMMA):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"EMA rate must be in [0, 1); got {rate}")
        if not 0.0 <= power < float("inf"):
            raise ValueError(f"EMA power must be finite and >= 0; got {power}")
        if not 0.0 < inv_gamma < float("inf"):
            raise ValueError(f"EMA inv_gamma must be finite and positive; got {inv_gamma}")
        self.rate, self.power, self.inv_gamma = rate, power, inv_gamma
        self.shadow = copy.deepcopy(model).eval()
        self.shadow.requires_grad_(False)

    def decay(self, step: int) -> float:
        return ema_decay(step, self.rate, self.power, self.inv_gamma)

    def schedule(self) -> dict[str, Any]:
        """The settings that, with the step, determine every decay (recorded in checkpoints)."""
        return {"rate": self.rate, "power": self.power, "inv_gamma": self.inv_gamma}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Average in `model` after optimizer step `step` (0-based: the number of steps taken before it)."""
        d = self.decay(step)
        for e, p in zip(self.shadow.parameters(), model.parameters()):
            if d == 0.0:
                e.copy_(p.detach())  # the warm-up's first update (and rate 0): exactly the weights, not a rounded lerp
            else:
                e.lerp_(p.detach(), 1.0 - d)
        # Buffers (e.g. batch-norm statistics of baselines) are copied, not averaged.
        for e, b in zip(self.shadow.buffers(), model.buffers()):
            e.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow.load_state_dict(state)
