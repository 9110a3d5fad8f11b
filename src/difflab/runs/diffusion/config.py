"""The typed config of a diffusion run: data, network, process, parameterisation, loss, optimisation, sampling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from difflab.configs import field
from difflab.data import DataConfig
from difflab.denoiser import DenoiserConfig
from difflab.errors import UserError
from difflab.losses import LossConfig
from difflab.nets import UNetConfig
from difflab.process import ProcessConfig
from difflab.training.config import TrainConfig
from difflab.samplers import SAMPLERS, SPACINGS
from difflab.restoration.conditioning import ConditionConfig
from difflab.runs.latent_config import LatentConfig


@dataclass(frozen=True)
class SampleConfig:
    sampler: str = field("ddim", help=f"sampler for grids during training and the default of `difflab sample`: one of {', '.join(SAMPLERS)}")
    steps: int = field(50, help="number of sampling steps (network evaluations for one-step samplers)")
    spacing: str = field("leading", help=f"how the steps are spread over 0..T-1: {', '.join(SPACINGS)}")
    eta: float = field(0.0, help="the run's default of the 'eta' sampler option (DDIM noise: 0 deterministic, 1 the DDPM posterior variance); "
                             "used by every sampler that has that option")
    grid_size: int = field(64, help="number of images in each training sample grid")

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise UserError(f"sample.sampler must be one of {', '.join(SAMPLERS)}; got {self.sampler!r}")
        if self.spacing not in SPACINGS:
            raise UserError(f"sample.spacing must be one of {', '.join(SPACINGS)}; got {self.spacing!r}")
        if self.steps < 1 or self.grid_size < 1:
            raise UserError("sample.steps and sample.grid_size must be at least 1")
        if not 0 <= self.eta < float("inf"):  # also refuses NaN
            raise UserError(f"sample.eta must be a finite number >= 0; got {self.eta}")

    def options_for(self, spec) -> dict:
        """The run's sampler-option defaults that `spec` (a SamplerSpec) has: today only sample.eta."""
        return {"eta": self.eta} if "eta" in spec.options else {}


@dataclass(frozen=True)
class RunConfig:
    kind: Literal["diffusion"] = field("diffusion", help="run kind: 'diffusion' (a denoising diffusion model or score network)")
    data: DataConfig = field(default_factory=DataConfig, help="training data")
    model: UNetConfig = field(default_factory=UNetConfig, help="the U-Net")
    process: ProcessConfig = field(default_factory=ProcessConfig, help="the forward noise process")
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig, help="what the network predicts and the reverse variance")
    loss: LossConfig = field(default_factory=LossConfig, help="training objective")
    train: TrainConfig = field(default_factory=TrainConfig, help="optimisation")
    sample: SampleConfig = field(default_factory=SampleConfig, help="sampling defaults")
    condition: ConditionConfig = field(default_factory=ConditionConfig, help="image conditioning for restoration models (docs/restoration.md)")
    latent: LatentConfig = field(default_factory=LatentConfig, help="latent diffusion: the autoencoder run whose latents the U-Net diffuses (docs/latent.md); empty: pixel space")

    def __post_init__(self):
        if self.denoiser.learn_sigma != self.model.learn_sigma:
            want = "true" if self.denoiser.learn_sigma else "false"
            raise UserError(f"denoiser.var_type '{self.denoiser.var_type}' needs model.learn_sigma={want}; set --set model.learn_sigma={want}")
        if self.sample.steps > self.process.T:
            raise UserError(f"sample.steps ({self.sample.steps}) cannot exceed process.T ({self.process.T}); lower sample.steps")
        if self.train.label_dropout > 0 and not self.model.class_dropout_null:
            raise UserError(f"train.label_dropout={self.train.label_dropout} needs a null label: set model.num_classes and model.class_dropout_null=true")
        self._check_condition()
        self._check_latent()

    def _check_latent(self) -> None:
        """A latent run's x0 are scaled latents (unit variance, not bounded): clipping them to [-1, 1] would be wrong."""
        if not self.latent.enabled:
            return
        if self.denoiser.clip_x0:
            raise UserError("a latent run (latent.autoencoder set) predicts latents, not images in [-1, 1]: set denoiser.clip_x0=false")
        if self.condition.kind != "none":
            raise UserError(f"condition.kind '{self.condition.kind}' conditions on pixels; latent runs are unconditional or class-conditional")

    def _check_condition(self) -> None:
        """An image-conditional model takes [x_t, y]: model.in_channels = out_channels (the data's) + the condition's channels."""
        c, m = self.condition, self.model
        if c.kind == "none":
            return
        if c.kind == "colorize" and m.out_channels != 3:
            raise UserError(f"condition.kind 'colorize' needs colour data: set model.out_channels=3 (and data.name=digits-color); it is {m.out_channels}")
        want = m.out_channels + c.channels(m.out_channels)
        if m.in_channels != want:
            raise UserError(f"condition.kind '{c.kind}' feeds {c.channels(m.out_channels)} condition channel(s) beside the {m.out_channels} of x_t: "
                            f"model.in_channels must be {want}, not {m.in_channels} (set model.in_channels before condition.*, each --set is checked in turn)")
        if c.kind == "sr" and m.image_size % c.factor:
            raise UserError(f"condition.factor {c.factor} must divide model.image_size {m.image_size}")

    @property
    def data_channels(self) -> int:
        """Channels of the images the model generates: model.in_channels, less the condition's for an image-conditional model."""
        return self.model.in_channels if self.condition.kind == "none" else self.model.out_channels
