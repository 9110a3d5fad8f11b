"""What both distillation tasks share: the teacher as a (guided) Denoiser, the student initialised from it, the draws."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from difflab.guidance import ClassifierFreeGuidance
from difflab.runs.student.config import StudentConfig
from difflab.runs.student.teacher import load_teacher


def teacher_denoiser(cfg: StudentConfig, teacher_run):
    """The teacher's Denoiser; a diffusion teacher guided at distill.guidance_scale (Meng et al. 2023 distil the guided
    eps~ = (1 + w) eps(x, y) - w eps(x, null) of Ho & Salimans 2022 Eq. 6); a progressive round's teacher is guided already."""
    den = teacher_run.denoiser
    w = cfg.distill.guidance_scale
    if teacher_run.kind != "diffusion" or w == 0:
        return den
    return ClassifierFreeGuidance(den, w, null_label=cfg.model.num_classes, clip_x0=den.clip_x0)


class Teaching:
    """Loads the teacher (hash checked), copies its weights into the student, and draws (index of the step, eps)
    per example from the step generator, so ranks and resumed runs see the draws one process would."""

    def __init__(self, cfg: StudentConfig, model: nn.Module, device: torch.device, n_choices: int):
        self.cfg, self.device, self.n_choices = cfg, device, n_choices
        run = load_teacher(cfg.teacher, device)
        model.load_state_dict(run.model.state_dict())  # the student starts as the teacher (both papers)
        self.teacher = teacher_denoiser(cfg, run)

    def draw(self, generator: torch.Generator, n: int, x_shape: tuple[int, ...]) -> dict[str, Tensor]:
        return {"i": torch.randint(self.n_choices, (n,), generator=generator),
                "eps": torch.randn((n, *x_shape), generator=generator)}

    def observe(self, gathered: dict[str, Tensor]) -> None:
        pass

    def grid_labels(self, n: int) -> Tensor | None:
        k = self.cfg.model.num_classes
        return (torch.arange(n) % k).to(self.device) if k else None
