"""The optimisation settings every run kind shares: steps, batch, AdamW, schedule, EMA, precision, logging."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from difflab.configs import field
from difflab.errors import UserError


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
    ema_rate: float = field(0.9999, help="largest EMA decay of the weights used for sampling (DDPM: 0.9999), reached after the warm-up of train.ema_power; 0 disables (EMA = current weights)")
    ema_power: float = field(2 / 3, help="warm-up of the EMA decay, k-diffusion's EMAWarmup (Crowson): at optimizer step k (from 0) the decay is min(train.ema_rate, 1 - (1 + k / train.ema_inv_gamma)^-power), so the first update copies the weights and the average forgets the initial ones (a constant 0.9999 keeps e^-1 = 37% of them after 10k steps); 2/3 (k-diffusion; 0.999 at 31.6k steps) or 3/4 (0.999 at 10k) for shorter runs; 0: constant train.ema_rate. Presets keep it on; it depends on the step only, so resume and DDP stay exact")
    ema_inv_gamma: float = field(1.0, help="step scale of the EMA warm-up (k-diffusion's inv_gamma): the decay is 1 - (1 + k / inv_gamma)^-train.ema_power")
    seed: int = field(0, help="seed of initialisation, data order, timesteps and noise: the same seed gives the same run")
    device: Literal["auto", "cpu", "cuda"] = field("auto", help="'auto' uses a GPU when one is visible (one per torchrun rank), else the CPU")
    precision: Literal["fp32", "bf16", "fp16"] = field("fp32", help="autocast precision of the network: 'bf16' (CPU or GPU) or 'fp16' (GPU, with loss scaling); losses and weights stay fp32")
    max_nonfinite: int = field(5, help="a step with a NaN/Inf loss or gradient (or a diverging loss, see divergence_factor) is skipped and "
                               "no checkpoint is written while such steps last; stop with an error after this many in a row")
    divergence_factor: float = field(100.0, help="a step whose loss exceeds this many times the median of the last 50 good losses "
                                      "(once 20 are known) counts as diverging, like a NaN step; 0 disables (single-optimiser runs only)")
    log_every: int = field(50, help="write a line to metrics.jsonl every this many steps")
    checkpoint_every: int = field(1000, help="write a checkpoint every this many steps (and always at the end)")
    keep_last: int = field(3, help="keep only the newest this many checkpoints; 0 keeps all")
    sample_every: int = field(1000, help="write a sample grid to samples/ every this many steps (0: only at the end)")
    tensorboard: bool = field(True, help="write TensorBoard event files to RUN/tensorboard/ (needs the optional `tensorboard` package: pip install difflab[tensorboard]); without the package training logs metrics.jsonl only and says so once")
    label_dropout: float = field(0.0, help="probability of replacing a label by the null label (index model.num_classes) in each training example, so one model also predicts unconditionally, for classifier-free guidance (Ho & Salimans 2022: 0.1-0.2); needs model.class_dropout_null")

    def __post_init__(self):
        for key in ("steps", "batch_size", "grad_accum", "log_every", "checkpoint_every"):
            if getattr(self, key) < 1:
                raise UserError(f"train.{key} must be at least 1; got {getattr(self, key)}")
        for key in ("warmup_steps", "keep_last", "sample_every", "max_nonfinite"):
            if getattr(self, key) < 0:
                raise UserError(f"train.{key} must be >= 0; got {getattr(self, key)}")
        if not 0 <= self.seed < 2**63:  # torch generators take 64-bit seeds; the step generator mixes seed and step below 2^63
            raise UserError(f"train.seed must be in 0 .. 2**63 - 1; got {self.seed}")
        if self.divergence_factor != 0 and not self.divergence_factor > 1:
            raise UserError(f"train.divergence_factor must be 0 (off) or above 1; got {self.divergence_factor}")
        if self.lr <= 0:
            raise UserError(f"train.lr must be positive; got {self.lr}")
        if not 0 <= self.ema_rate < 1:
            raise UserError(f"train.ema_rate must be in [0, 1); got {self.ema_rate}")
        # Written as `not (...)` so that NaN fails too; inf would make the warm-up a step function.
        if not 0 <= self.ema_power < math.inf:
            raise UserError(f"train.ema_power must be finite and >= 0 (0 disables the EMA warm-up); got {self.ema_power}")
        if not 0 < self.ema_inv_gamma < math.inf:
            raise UserError(f"train.ema_inv_gamma must be finite and positive; got {self.ema_inv_gamma}")
        if not 0 <= self.label_dropout < 1:
            raise UserError(f"train.label_dropout must be in [0, 1); got {self.label_dropout}")
        if self.batch_size % self.grad_accum:
            raise UserError(f"train.batch_size ({self.batch_size}) must be divisible by train.grad_accum ({self.grad_accum})")
