"""The typed config of a training run: data, network, process, parameterisation, loss, optimisation, sampling."""

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
from difflab.samplers import SAMPLERS, SPACINGS
from difflab.tasks.conditioning import ConditionConfig


@dataclass(frozen=True)
class TrainConfig:
    steps: int = field(10000, help="number of optimizer steps to train for (the run's total, also when resuming)")
    batch_size: int = field(128, help="global batch size: split across torchrun ranks and gradient-accumulation micro-batches")
    lr: float = field(2e-4, help="peak learning rate of AdamW (DDPM: 2e-4 on CIFAR-10; ADM: 1e-4 / 3e-4)")
    warmup_steps: int = field(0, help="linear learning-rate warm-up from 0 over this many steps (DDPM: 5000)")
    lr_schedule: Literal["constant", "cosine"] = field("constant", help="after warm-up: 'constant' (DDPM, ADM) or 'cosine' decay to 0 at train.steps")
    weight_decay: float = field(0.0, help="AdamW decoupled weight decay")
    adam_beta1: float = field(0.9, help="AdamW beta1")
    adam_beta2: float = field(0.999, help="AdamW beta2")
    grad_clip: float = field(1.0, help="clip the global gradient norm to this value (DDPM: 1.0); 0 disables clipping")
    grad_accum: int = field(1, help="split each rank's share of the batch into this many micro-batches (same result, less memory)")
    ema_rate: float = field(0.9999, help="EMA decay of the weights used for sampling (DDPM: 0.9999); 0 disables (EMA = current weights)")
    seed: int = field(0, help="seed of initialisation, data order, timesteps and noise: the same seed gives the same run")
    device: Literal["auto", "cpu", "cuda"] = field("auto", help="'auto' uses a GPU when one is visible (one per torchrun rank), else the CPU")
    precision: Literal["fp32", "bf16", "fp16"] = field("fp32", help="autocast precision of the network: 'bf16' (CPU or GPU) or 'fp16' (GPU, with loss scaling); losses and weights stay fp32")
    max_nonfinite: int = field(5, help="a step with a NaN/Inf loss or gradient is skipped; stop with an error after this many in a row")
    log_every: int = field(50, help="write a line to metrics.jsonl every this many steps")
    checkpoint_every: int = field(1000, help="write a checkpoint every this many steps (and always at the end)")
    keep_last: int = field(3, help="keep only the newest this many checkpoints; 0 keeps all")
    sample_every: int = field(1000, help="write a sample grid to samples/ every this many steps (0: only at the end)")
    label_dropout: float = field(0.0, help="probability of replacing a label by the null label (index model.num_classes) in each training example, so one model also predicts unconditionally, for classifier-free guidance (Ho & Salimans 2022: 0.1-0.2); needs model.class_dropout_null")

    def __post_init__(self):
        for key in ("steps", "batch_size", "grad_accum", "log_every", "checkpoint_every"):
            if getattr(self, key) < 1:
                raise UserError(f"train.{key} must be at least 1; got {getattr(self, key)}")
        for key in ("warmup_steps", "keep_last", "sample_every", "max_nonfinite"):
            if getattr(self, key) < 0:
                raise UserError(f"train.{key} must be >= 0; got {getattr(self, key)}")
        if self.lr <= 0:
            raise UserError(f"train.lr must be positive; got {self.lr}")
        if not 0 <= self.ema_rate < 1:
            raise UserError(f"train.ema_rate must be in [0, 1); got {self.ema_rate}")
        if not 0 <= self.label_dropout < 1:
            raise UserError(f"train.label_dropout must be in [0, 1); got {self.label_dropout}")
        if self.batch_size % self.grad_accum:
            raise UserError(f"train.batch_size ({self.batch_size}) must be divisible by train.grad_accum ({self.grad_accum})")


@dataclass(frozen=True)
class SampleConfig:
    sampler: str = field("ddim", help=f"sampler for grids during training and the default of `difflab sample`: one of {', '.join(SAMPLERS)}")
    steps: int = field(50, help="number of sampling steps (network evaluations for one-step samplers)")
    spacing: str = field("leading", help=f"how the steps are spread over 0..T-1: {', '.join(SPACINGS)}")
    eta: float = field(0.0, help="DDIM noise: 0 deterministic, 1 the DDPM posterior variance")
    grid_size: int = field(64, help="number of images in each training sample grid")

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise UserError(f"sample.sampler must be one of {', '.join(SAMPLERS)}; got {self.sampler!r}")
        if self.spacing not in SPACINGS:
            raise UserError(f"sample.spacing must be one of {', '.join(SPACINGS)}; got {self.spacing!r}")
        if self.steps < 1 or self.grid_size < 1:
            raise UserError("sample.steps and sample.grid_size must be at least 1")


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig, help="training data")
    model: UNetConfig = field(default_factory=UNetConfig, help="the U-Net")
    process: ProcessConfig = field(default_factory=ProcessConfig, help="the forward noise process")
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig, help="what the network predicts and the reverse variance")
    loss: LossConfig = field(default_factory=LossConfig, help="training objective")
    train: TrainConfig = field(default_factory=TrainConfig, help="optimisation")
    sample: SampleConfig = field(default_factory=SampleConfig, help="sampling defaults")
    condition: ConditionConfig = field(default_factory=ConditionConfig, help="image conditioning for restoration models (docs/restoration.md)")

    def __post_init__(self):
        if self.denoiser.learn_sigma != self.model.learn_sigma:
            want = "true" if self.denoiser.learn_sigma else "false"
            raise UserError(f"denoiser.var_type '{self.denoiser.var_type}' needs model.learn_sigma={want}; set --set model.learn_sigma={want}")
        if self.sample.steps > self.process.T:
            raise UserError(f"sample.steps ({self.sample.steps}) cannot exceed process.T ({self.process.T}); lower sample.steps")
        if self.train.label_dropout > 0 and not self.model.class_dropout_null:
            raise UserError(f"train.label_dropout={self.train.label_dropout} needs a null label: set model.num_classes and model.class_dropout_null=true")
        self._check_condition()

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
