"""The run folder on disk: refusing to clobber one, finding its checkpoints, and telling which kind of run it holds.

runs/<name>/config.json (the resolved config, with its "kind"), checkpoints/step-N.safetensors + step-N.json,
metrics.jsonl, samples/, plots/ (docs/architecture.md, "Runs on disk").
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from difflab.errors import UserError
from difflab.training.checkpoint import list_checkpoints

RUN_FILES = ("config.json", "checkpoints", "metrics.jsonl", "samples", "plots", "tensorboard")
DEFAULT_KIND = "diffusion"  # runs written before config.json carried a "kind" are diffusion runs (or say so in their checkpoints)


REPLACED = ".replaced"  # where --force parks the old run until the new one has its first checkpoint


def prepare_run_dir(out: Path, resume: bool, force: bool, *, check_only: bool = False) -> Path | None:
    """Refuse to write into a folder holding a run unless resuming it or told to replace it (--force).

    --force deletes nothing: the old run's files move to OUT/.replaced, which `keep_or_restore` removes once the new
    run has a checkpoint, or moves back if it fails before one. Returns that folder (None when nothing was replaced).
    `check_only`: refuse what would be refused, move nothing (to fail before slow work, e.g. reading a large file).
    """
    out = Path(out)
    if resume and force:
        raise UserError("--resume and --force contradict each other: --resume continues the run, --force replaces it")
    holds_run = out.exists() and any((out / f).exists() for f in RUN_FILES)
    if resume:
        if not (out / "config.json").exists():
            raise UserError(f"--resume: {out} holds no run (no config.json); start it without --resume")
        return None
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the run")
    if not holds_run:
        return None
    if not force:
        if (out / "config.json").exists() and not list_checkpoints(out / "checkpoints"):
            raise UserError(f"{out} holds a run that stopped before its first checkpoint: add --resume to start it again with its "
                            "config, --force to replace it, or choose another --out")
        raise UserError(f"{out} already holds a run: add --resume to continue it, --force to replace it, or choose another --out")
    if check_only:
        return None
    backup = out / REPLACED
    if backup.exists():
        shutil.rmtree(backup)  # a parked run from an earlier --force whose replacement already has a checkpoint
    backup.mkdir()
    for f in RUN_FILES:
        if (out / f).exists():
            (out / f).rename(backup / f)
    return backup


def write_replacing(out: Path, force: bool, write) -> Path:
    """`write()` into the run folder `out` (a fresh one, or with `force` one whose old run is parked and dropped only
    when `write` succeeded); returns `out`."""
    backup = prepare_run_dir(out, resume=False, force=force)
    try:
        write()
    except BaseException:
        keep_or_restore(out, backup, failed=True)
        raise
    keep_or_restore(out, backup, failed=False)
    return out


def keep_or_restore(out: Path, backup: Path | None, failed: bool) -> str | None:
    """After a --force run: drop the parked old run, or, when the new one failed before writing any checkpoint, put the
    old run back (the new run's files go). Returns what happened, for the message, or None."""
    if backup is None or not backup.exists():
        return None
    if failed and not list_checkpoints(out / "checkpoints"):
        for f in RUN_FILES:
            p = out / f
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        for p in backup.iterdir():
            p.rename(out / p.name)
        backup.rmdir()
        return "restored"
    shutil.rmtree(backup)
    return "dropped"


def find_checkpoint(spec: Path) -> tuple[Path, Path]:
    """(run folder, checkpoint base path) for a run folder (newest checkpoint) or a checkpoint file."""
    spec = Path(spec).expanduser()
    if spec.is_dir():
        found = list_checkpoints(spec / "checkpoints")
        if not found:
            raise UserError(f"no checkpoint in {spec / 'checkpoints'}: train the run first (difflab train --out {spec})")
        return spec, found[-1]
    if spec.suffix in (".safetensors", ".json") and spec.exists():
        return spec.parent.parent, spec.with_suffix("")
    if not spec.exists():
        raise UserError(f"run {spec} does not exist: give a run folder written by `difflab train` or a step-N.safetensors file")
    raise UserError(f"--run {spec} is neither a run folder nor a checkpoint file (step-N.safetensors)")


def _read_object(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def kind_in(meta: dict) -> str | None:
    """The kind named by a config dict or a checkpoint's JSON (top-level "kind", else its config's)."""
    kind = meta.get("kind")
    if kind is None and isinstance(meta.get("config"), dict):
        kind = meta["config"].get("kind")
    return kind if isinstance(kind, str) else None


def is_run(path: Path) -> bool:
    """A run folder (config.json or checkpoints/) or one of its checkpoint files."""
    path = Path(path).expanduser()
    if path.is_dir():
        return (path / "config.json").is_file() or (path / "checkpoints").is_dir()
    return path.suffix == ".safetensors" and path.is_file()


def run_kind(spec: str | Path) -> str | None:
    """The kind of the run at `spec` (a run folder or a checkpoint file), or None when `spec` holds no run.

    The one detector: config.json's "kind"; else the newest checkpoint's JSON "kind" (classifier runs before the
    config carried it); else "diffusion", the only kind whose old runs named none.
    """
    path = Path(spec).expanduser()
    if not is_run(path):
        return None
    if path.is_dir():
        cfg = _read_object(path / "config.json") if (path / "config.json").is_file() else None
        if cfg is not None and kind_in(cfg):
            return kind_in(cfg)
        found = list_checkpoints(path / "checkpoints")
        meta = _read_object(found[-1].with_suffix(".json")) if found else None
    else:
        meta = _read_object(path.with_suffix(".json"))
    return (kind_in(meta) if meta else None) or DEFAULT_KIND
