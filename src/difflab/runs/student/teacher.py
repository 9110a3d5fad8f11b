"""The teacher of a student: a diffusion run's checkpoint named by path and content hash, checked every time it is used."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dataclasses import dataclass

import torch
from torch import nn

from difflab.configs import from_dict
from difflab.errors import UserError
from difflab.nets import build_unet
from difflab.runs.folder import find_checkpoint, kind_in
from difflab.runs.student.config import TeacherConfig
from difflab.training.checkpoint import load_checkpoint, unflatten


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def teacher_checkpoint(spec: str | Path) -> tuple[Path, dict]:
    """(the .safetensors file, its JSON) of a run folder (newest checkpoint) or a step-N checkpoint; one-line errors."""
    _, base = find_checkpoint(Path(spec))
    try:
        meta = json.loads(base.with_suffix(".json").read_text())
    except (OSError, json.JSONDecodeError):
        raise UserError(f"the teacher checkpoint {base}.json is missing or damaged; give a complete run folder") from None
    return base.with_suffix(".safetensors").resolve(), meta


def reference(spec: str | Path) -> tuple[TeacherConfig, dict]:
    """The TeacherConfig (path + hash) of the teacher `spec`, and its checkpoint JSON."""
    path, meta = teacher_checkpoint(spec)
    return TeacherConfig(path=str(path), sha256=sha256_file(path)), meta


def check_unchanged(teacher: TeacherConfig, given: str | Path | None = None) -> None:
    """The teacher a student was started with must be the one it continues with: the recorded file must hash as recorded,
    and a --teacher given again must resolve to that same content."""
    path = Path(teacher.path)
    if not path.is_file():
        raise UserError(f"the teacher checkpoint {path} is gone; a student continues only with the teacher it was started with")
    now = sha256_file(path)
    if now != teacher.sha256:
        raise UserError(f"the teacher {path} changed since this student started (sha256 {teacher.sha256[:12]}, now {now[:12]}); "
                        "distil the changed teacher into a new --out")
    if given is not None:
        other = sha256_file(teacher_checkpoint(given)[0])
        if other != teacher.sha256:
            raise UserError(f"--teacher {given} is not the teacher this student started with (sha256 {other[:12]}, "
                            f"recorded {teacher.sha256[:12]} for {path}); distil it into a new --out")


@dataclass
class Teacher:
    """A loaded teacher: its kind ("diffusion", or "student" for a progressive round), config, network and Denoiser."""

    kind: str
    cfg: object
    model: nn.Module
    denoiser: object


def load_teacher(teacher: TeacherConfig, device: torch.device) -> Teacher:
    """The teacher's EMA network (eval mode, no gradients) and Denoiser, after checking its hash. Loaded here, not with
    runs.session.load_run: the session knows every kind, the student among them, so it must not be needed to build one."""
    from difflab.runs.diffusion.config import RunConfig
    from difflab.runs.diffusion.kind import KIND as DIFFUSION
    from difflab.runs.student.config import StudentConfig
    from difflab.runs.student.denoisers import student_denoiser

    check_unchanged(teacher)
    tensors, meta = load_checkpoint(Path(teacher.path).with_suffix(""))
    kind = teacher_kind(meta)
    if kind == "diffusion":
        cfg = from_dict(RunConfig, {**meta["config"], "kind": kind})
        model, make_denoiser = DIFFUSION.build_model(cfg), DIFFUSION.denoiser
    else:  # the previous progressive round: one U-Net
        cfg = from_dict(StudentConfig, {**meta["config"], "kind": kind})
        model, make_denoiser = build_unet(cfg.model), student_denoiser
    model.load_state_dict(unflatten("ema", tensors))
    model.to(device).eval().requires_grad_(False)
    return Teacher(kind, cfg, model, make_denoiser(cfg, model))


def teacher_kind(meta: dict) -> str:
    return kind_in(meta) or "diffusion"
