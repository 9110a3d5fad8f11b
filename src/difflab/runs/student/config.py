"""The typed config of a distilled student: its teacher (path + content hash), the method, and the teacher's network,
process and data, which the student keeps (both papers initialise the student from the teacher's weights)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from difflab.configs import field
from difflab.data import DataConfig
from difflab.denoiser import DenoiserConfig
from difflab.errors import UserError
from difflab.nets import UNetConfig
from difflab.process import ProcessConfig
from difflab.restoration.conditioning import ConditionConfig
from difflab.samplers import SAMPLERS, timesteps
from difflab.training.config import TrainConfig

Method = Literal["progressive", "consistency"]
METHODS: tuple[str, ...] = ("progressive", "consistency")


@dataclass(frozen=True)
class TeacherConfig:
    path: str = field("", help="the teacher's checkpoint: step-N.safetensors of a diffusion run (or, for a progressive round, of the previous round)")
    sha256: str = field("", help="content hash of that checkpoint file; checked whenever the student is trained or resumed")


@dataclass(frozen=True)
class DistillConfig:
    method: Method = field("progressive", help="'progressive' (Salimans & Ho 2022: rounds that halve the DDIM steps) or "
                                               "'consistency' (Song et al. 2023: consistency distillation with an EMA target)")
    teacher_steps: int = field(64, help="progressive: DDIM steps of the teacher in the first round (N, halved every round); "
                                        "consistency: N, the points of the discretisation (EDM's rho=7 grid in sigma, plus the sampling grids)")
    student_steps: tuple[int, ...] = field((1, 2, 4), help="the step counts the student samples with (`difflab sample --steps`): "
                                                            "progressive keeps the students of those rounds")
    round: int = field(0, help="progressive: 0 for the student `difflab distill` assembles, k >= 1 for the run of round k "
                               "(teacher_steps / 2^(k-1) teacher steps -> half as many); set by `difflab distill`")
    parameterization: Literal["v", "x0"] = field("v", help="progressive: what the student predicts, 'v' or 'x0' (Salimans & Ho 2022 "
                                                           "Sec. 4: eps is unusable at one step, where x_0 = (x_t - sigma eps) / alpha with alpha ~ 0)")
    weighting: Literal["truncated_snr", "snr_plus_one"] = field("truncated_snr", help="progressive: the weight of the x_0 error, "
                                                                "max(SNR, 1) ('truncated SNR') or SNR + 1 (Salimans & Ho 2022, Sec. 4)")
    guidance_scale: float = field(0.0, help="classifier-free guidance distilled in: the teacher's target is its guided prediction "
                                            "(1 + w) eps(x, y) - w eps(x, null) at this w (needs a teacher trained with label dropout); 0: unguided")
    ema_mu: float = field(0.95, help="consistency: decay mu of the target network theta^- <- mu theta^- + (1 - mu) theta (Song et al. 2023, Algorithm 2)")

    @property
    def rounds(self) -> int:
        """Progressive: the number of halvings from teacher_steps down to the fewest student steps."""
        return round(math.log2(self.teacher_steps / min(self.student_steps)))

    def round_steps(self, k: int) -> tuple[int, int]:
        """Progressive round k: (teacher DDIM steps, student DDIM steps)."""
        return self.teacher_steps >> (k - 1), self.teacher_steps >> k


@dataclass(frozen=True)
class StudentSampleConfig:
    sampler: str = field("ddim", help=f"default sampler of `difflab sample`: one of {', '.join(SAMPLERS)} (progressive: ddim; consistency: consistency)")
    steps: int = field(0, help="default number of sampling steps, one of distill.student_steps; 0: the most it serves")
    gamma: float = field(1.0, help="the consistency sampler's gamma: 1 is Song et al.'s multistep sampling (fresh noise), 0 deterministic")
    grid_size: int = field(64, help="number of images in each training sample grid")

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise UserError(f"sample.sampler must be one of {', '.join(SAMPLERS)}; got {self.sampler!r}")
        if not 0 <= self.gamma <= 1:
            raise UserError(f"sample.gamma must be in [0, 1]; got {self.gamma}")
        if self.grid_size < 1:
            raise UserError("sample.grid_size must be at least 1")

    def options_for(self, spec) -> dict:
        """The student's sampler-option defaults that `spec` (a SamplerSpec) has: the consistency sampler's gamma."""
        return {"gamma": self.gamma} if "gamma" in spec.options else {}


@dataclass(frozen=True)
class StudentConfig:
    kind: Literal["student"] = field("student", help="run kind: 'student' (a few-step student distilled from a diffusion run)")
    teacher: TeacherConfig = field(default_factory=TeacherConfig, help="the teacher checkpoint and its hash")
    distill: DistillConfig = field(default_factory=DistillConfig, help="the distillation method")
    data: DataConfig = field(default_factory=DataConfig, help="training data (the teacher's)")
    model: UNetConfig = field(default_factory=UNetConfig, help="the U-Net (the teacher's)")
    process: ProcessConfig = field(default_factory=ProcessConfig, help="the forward process (the teacher's)")
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig, help="the teacher's parameterisation and variance")
    train: TrainConfig = field(default_factory=TrainConfig, help="optimisation (progressive: of each round)")
    sample: StudentSampleConfig = field(default_factory=StudentSampleConfig, help="sampling defaults")

    def __post_init__(self):
        d, T = self.distill, self.process.T
        if not d.student_steps or any(n < 1 for n in d.student_steps) or len(set(d.student_steps)) != len(d.student_steps):
            raise UserError(f"distill.student_steps must be distinct positive step counts; got {list(d.student_steps)}")
        if not 2 <= d.teacher_steps <= T:
            raise UserError(f"distill.teacher_steps must be in 2..process.T={T}; got {d.teacher_steps}")
        if d.method == "progressive":
            for n in d.student_steps:
                ratio = d.teacher_steps // n
                if d.teacher_steps % n or ratio < 2 or ratio & (ratio - 1):
                    raise UserError(f"progressive distillation halves distill.teacher_steps={d.teacher_steps} each round: every "
                                    f"distill.student_steps entry must be it divided by a power of two (got {n})")
            if not 0 <= d.round <= d.rounds:
                raise UserError(f"distill.round must be in 0..{d.rounds}; got {d.round}")
        else:
            if max(d.student_steps) > d.teacher_steps:
                raise UserError(f"distill.student_steps cannot exceed distill.teacher_steps={d.teacher_steps}")
            if d.round:
                raise UserError("distill.round is for progressive distillation; a consistency student has one training run")
        if not 0 <= d.guidance_scale < math.inf:
            raise UserError(f"distill.guidance_scale must be a finite number >= 0; got {d.guidance_scale}")
        if d.guidance_scale > 0 and not (self.model.num_classes is not None and self.model.class_dropout_null):
            raise UserError("distill.guidance_scale needs a class-conditional teacher with a null label (model.class_dropout_null)")
        if not 0 <= d.ema_mu < 1:
            raise UserError(f"distill.ema_mu must be in [0, 1); got {d.ema_mu}")
        if self.sample.steps and self.sample.steps not in self.served_steps:
            raise UserError(f"sample.steps={self.sample.steps} is not a step count this student serves ({_listing(self.served_steps)})")

    # ----- what the student serves ----------------------------------------------------------------------------
    @property
    def served_steps(self) -> tuple[int, ...]:
        """The step counts this run samples with: a progressive round its own; otherwise distill.student_steps."""
        d = self.distill
        return (d.round_steps(d.round)[1],) if d.method == "progressive" and d.round else tuple(sorted(d.student_steps))

    @property
    def default_steps(self) -> int:
        return self.sample.steps or max(self.served_steps)

    def grid(self, n: int) -> list[int]:
        """The n timesteps of n-step sampling, decreasing from T-1: the 'trailing' spacing, whose grids nest under halving
        (T/n is exact for n a power of two, so grid(n/2) = grid(n)[::2] and progressive rounds line up)."""
        return timesteps(self.process.T, n, "trailing")

    def plan_timesteps(self, steps: int | None, spacing: str | None, explicit) -> list[int]:
        """The timesteps `difflab sample` visits: a student samples only on the grids it was trained for."""
        if spacing is not None or explicit is not None:
            raise UserError("a distilled student samples on the timesteps it was trained for: drop --spacing and --timesteps")
        n = self.default_steps if steps is None else steps
        if n not in self.served_steps:
            raise UserError(f"this student was trained for --steps {_listing(self.served_steps)}, not {n}; "
                            "distil again with --set distill.student_steps=[...] for other step counts")
        return self.grid(n)

    @property
    def condition(self) -> ConditionConfig:
        """Students are not image-conditional (sampling asks)."""
        return ConditionConfig()

    @property
    def data_channels(self) -> int:
        return self.model.in_channels


def _listing(steps) -> str:
    return ", ".join(map(str, sorted(steps)))


def with_round(cfg: StudentConfig, k: int, teacher: TeacherConfig) -> StudentConfig:
    """The config of progressive round k, taught by `teacher`; it samples at its own step count."""
    return dataclasses.replace(cfg, distill=dataclasses.replace(cfg.distill, round=k), teacher=teacher,
                               sample=dataclasses.replace(cfg.sample, steps=0))
