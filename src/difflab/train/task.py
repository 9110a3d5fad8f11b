"""The diffusion TrainTask: the loss of a RunConfig, and sample grids from the EMA weights."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from difflab.denoiser import ModelDenoiser
from difflab.losses import build_loss
from difflab.process import NoiseProcess
from difflab.samplers import get_sampler, timesteps
from difflab.train.config import RunConfig


class DiffusionTask:
    """Trains a network with the run's DiffusionLoss; randomness (t, eps) is drawn per global batch."""

    def __init__(self, cfg: RunConfig, model: nn.Module, process: NoiseProcess, device: torch.device):
        self.cfg, self.process, self.device = cfg, process, device
        self.loss_fn = build_loss(cfg.loss, process, cfg.denoiser)

    def draw(self, generator: torch.Generator, n: int, x_shape: tuple[int, ...]) -> dict[str, Tensor]:
        return self.loss_fn.draw(n, x_shape, generator)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None, draws: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        per_example = self.loss_fn.compute(model, x, y, **draws)
        rec = self.loss_fn.last
        extra = {"t": rec.t.to(x.device), "loss": rec.loss.double()} if self.loss_fn.needs_update else {}
        return per_example, extra

    def observe(self, gathered: dict[str, Tensor]) -> None:
        if self.loss_fn.needs_update:
            self.loss_fn.update(gathered["t"], gathered["loss"])

    @torch.no_grad()
    def sample_grid(self, model: nn.Module, generator: torch.Generator) -> Tensor:
        s, m = self.cfg.sample, self.cfg.model
        model.eval()
        den = ModelDenoiser(model, self.process, self.cfg.denoiser)
        n = s.grid_size
        x_T = torch.randn((n, m.in_channels, m.image_size, m.image_size), generator=generator).to(self.device)
        y = (torch.arange(n) % m.num_classes).to(self.device) if m.num_classes else None
        spec = get_sampler(s.sampler)
        opts = {"eta": s.eta} if s.sampler == "ddim" else {}
        return spec.fn(den, x_T, timesteps(self.process.T, s.steps, s.spacing), y=y, generator=generator, **opts).cpu()

    def state_dict(self) -> dict[str, Tensor]:
        return self.loss_fn.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.loss_fn.load_state_dict(state)
