"""What the VAE and DCGAN training tasks share: a latent z ~ N(0, I) decoded to images, per-step logs, no task state."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LatentTask:
    """Base of VAETask and GANTask: holds the model config (with `latent_dim`) and the grid size; samples grids from z."""

    def __init__(self, cfg, grid_size: int = 64):
        self.cfg, self.grid_size = cfg, grid_size
        self._logs: dict[str, float] = {}

    def step_logs(self) -> dict[str, float]:
        return dict(self._logs)

    @torch.no_grad()
    def sample_grid(self, model: nn.Module, generator: torch.Generator) -> Tensor:
        model.eval()
        z = torch.randn((self.grid_size, self.cfg.latent_dim), generator=generator)
        return model.sample(z.to(next(model.parameters()).device)).cpu()

    def state_dict(self) -> dict[str, Tensor]:
        return {}  # nothing beyond the Trainer's RNG: draws come from its per-step generator

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        pass
