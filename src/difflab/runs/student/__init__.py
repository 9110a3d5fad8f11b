"""The student run kind: few-step students distilled from a diffusion run (progressive and consistency distillation)."""

from difflab.runs.student.config import METHODS, DistillConfig, StudentConfig, TeacherConfig
from difflab.runs.student.kind import KIND

__all__ = ["KIND", "METHODS", "DistillConfig", "StudentConfig", "TeacherConfig"]
