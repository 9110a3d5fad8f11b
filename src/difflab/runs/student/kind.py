"""The student run kind: a few-step student distilled from a diffusion run (docs/distillation.md)."""

from __future__ import annotations

import torch
from torch import nn

from difflab.errors import UserError
from difflab.nets import build_unet
from difflab.runs.diffusion import check_data_fits_model
from difflab.runs.kind import RunKind
from difflab.runs.student.config import StudentConfig
from difflab.runs.student.denoisers import student_denoiser


def _model(cfg: StudentConfig) -> nn.Module:
    """One U-Net (a consistency student, a progressive round); the assembled progressive student holds one per step count."""
    d = cfg.distill
    if d.method == "progressive" and d.round == 0:
        return nn.ModuleDict({str(n): build_unet(cfg.model) for n in sorted(d.student_steps)})
    return build_unet(cfg.model)


def _task(cfg: StudentConfig, model: nn.Module, device: torch.device):
    if cfg.distill.method == "consistency":
        from difflab.runs.student.consistency import ConsistencyTask

        return ConsistencyTask(cfg, model, device)
    if cfg.distill.round == 0:
        raise UserError("a progressive student is trained round by round: run `difflab distill --teacher RUN --method progressive --out OUT`")
    from difflab.runs.student.progressive import ProgressiveTask

    return ProgressiveTask(cfg, model, device)


KIND = RunKind(
    name="student",
    summary="a few-step student distilled from a diffusion run (progressive or consistency distillation)",
    config_class=StudentConfig,
    presets={},  # made from a teacher by `difflab distill`, never from a preset
    build_model=_model,
    build_task=_task,
    data_config=lambda cfg: cfg.data,
    check_data=check_data_fits_model,
    uses_labels=lambda cfg: cfg.model.num_classes is not None,
    # The teacher, the method and the network may not change on resume: only how long and how fast it trains.
    frozen=("kind", "teacher", "distill", "data", "model", "process", "denoiser"),
    changeable="train.* and sample.*",
    train_hint="difflab distill --teacher RUN --method consistency --out OUT",
    image_shape=lambda cfg: (cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size),
    denoiser=student_denoiser,
)
