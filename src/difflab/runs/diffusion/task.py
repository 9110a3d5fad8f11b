"""The diffusion TrainTask: the loss of a RunConfig, and sample grids from the EMA weights."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from difflab.denoiser import ModelDenoiser
from difflab.losses import build_loss
from difflab.process import NoiseProcess
from difflab.samplers import get_sampler, prior_sample, select_steps
from difflab.restoration.conditioning import ImageConditioned, build_degradation
from difflab.runs.diffusion.config import RunConfig
from difflab.runs.latent import latent_decoder


class DiffusionTask:
    """Trains a network with the run's DiffusionLoss; randomness (t, eps, label dropout) is drawn per global batch.

    Label dropout (train.label_dropout = p_uncond of Ho & Salimans 2022, Algorithm 1): each example's label is
    replaced by the null label, index model.num_classes, with probability p. The coin flips are drawn in `draw`
    from the step generator, after the loss's own draws, so ranks and resumed runs see exactly the flips one
    uninterrupted process would, and p = 0 leaves the random stream of existing runs unchanged.

    Image-conditional models (cfg.condition, docs/restoration.md): the condition y = degrade(x0) of each clean batch is
    concatenated to x_t as input channels (ImageConditioned); random inpainting masks are drawn in `draw`, after the
    label flips, so they too are a function of (seed, step) sliced per rank, and unconditional runs are unchanged.
    """

    def __init__(self, cfg: RunConfig, model: nn.Module, process: NoiseProcess, device: torch.device):
        self.cfg, self.process, self.device = cfg, process, device
        self.loss_fn = build_loss(cfg.loss, process, cfg.denoiser)
        self.label_dropout = cfg.train.label_dropout
        self.null_label = cfg.model.num_classes  # the extra embedding row of model.class_dropout_null
        self.degradation = build_degradation(cfg.condition, cfg.data_channels)  # None for an ordinary model
        self._grid_data = None  # images for the progress grid of an image-conditional model, loaded on first use
        self._decode = None  # a latent run's autoencoder decoder, loaded for the first grid

    def draw(self, generator: torch.Generator, n: int, x_shape: tuple[int, ...]) -> dict[str, Tensor]:
        draws = self.loss_fn.draw(n, x_shape, generator)
        if self.label_dropout > 0:
            draws["drop_label"] = torch.rand(n, generator=generator, dtype=torch.float64) < self.label_dropout  # (n,) bool
        if self.degradation is not None:
            draws.update(self.degradation.draw(generator, n, x_shape))  # {"cond_mask": (n, 1, H, W)} for random masks
        return draws

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None, draws: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        draws = dict(draws)
        drop = draws.pop("drop_label", None)
        if drop is not None and y is not None:
            y = torch.where(drop.to(y.device), torch.full_like(y, self.null_label), y)
        cond_mask = draws.pop("cond_mask", None)
        if self.degradation is not None:
            model = ImageConditioned(model, self.degradation(x, cond_mask))  # the network sees [x_t, y]
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
        if self.degradation is not None:
            return self._conditional_grid(model, generator)
        den = ModelDenoiser(model, self.process, self.cfg.denoiser)
        n = s.grid_size
        x_T = prior_sample(self.process, (n, m.in_channels, m.image_size, m.image_size), generator, dtype=torch.float32).to(self.device)
        y = (torch.arange(n) % m.num_classes).to(self.device) if m.num_classes else None
        spec = get_sampler(s.sampler)
        opts = s.options_for(spec)
        x0 = spec.fn(den, x_T, select_steps(self.process, s.steps, s.spacing), y=y, generator=generator, **opts)
        if self.cfg.latent.enabled:  # a latent run's grid shows the decoded images
            if self._decode is None:
                self._decode = latent_decoder(self.cfg.latent, self.device)
            x0 = self._decode(x0).clamp(-1, 1)
        return x0.cpu()

    def _conditional_grid(self, model: nn.Module, generator: torch.Generator) -> Tensor:
        """Triples [degraded input | sample | target] of the first 3 m^2 training images (m^2 triples per grid row group:
        the default grid has 3m columns, so each row holds m whole triples)."""
        from difflab.data import load_dataset

        s, deg = self.cfg.sample, self.degradation
        if self._grid_data is None:
            self._grid_data = load_dataset(self.cfg.data)
        m = max(1, int((s.grid_size / 9) ** 0.5))
        x0 = self._grid_data.x[: 3 * m * m].to(self.device)
        y = self._grid_data.y[: len(x0)].to(self.device) if self.cfg.model.num_classes is not None and self._grid_data.y is not None else None
        mask = deg.draw(generator, len(x0), tuple(x0.shape[1:])).get("cond_mask")
        o = deg.observe(x0, mask)
        den = ModelDenoiser(ImageConditioned(model, deg.condition(o)), self.process, self.cfg.denoiser)
        x_T = prior_sample(self.process, x0.shape, generator, dtype=torch.float32).to(self.device)
        spec = get_sampler(s.sampler)
        opts = s.options_for(spec)
        out = spec.fn(den, x_T, select_steps(self.process, s.steps, s.spacing), y=y, generator=generator, **opts).clamp(-1, 1)
        return torch.stack([deg.show(o), out, x0], 1).flatten(0, 1).cpu()

    def state_dict(self) -> dict[str, Tensor]:
        return self.loss_fn.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.loss_fn.load_state_dict(state)
