"""Checkpoints as safetensors (every tensor) + JSON (config, step, non-tensor state), written atomically.

`step-N.safetensors` holds model.*, ema.*, optim.* and rng.* tensors; `step-N.json` is written after it
and marks the checkpoint complete. Nothing here unpickles anything.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from difflab.data.atomic import atomic_write
from difflab.errors import UserError

_STEP = re.compile(r"^step-(\d+)\.json$")


def flatten(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().contiguous().cpu() for k, v in state.items()}


def unflatten(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (per-parameter state) and JSON (param groups, scalars)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"{idx}.{key}"] = val
            else:
                scalars[f"{idx}.{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = val
    for name, val in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = val
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(folder: Path, step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any], keep_last: int) -> Path:
    """Write step-N.safetensors then step-N.json (each atomically), then drop all but the newest `keep_last`."""
    folder.mkdir(parents=True, exist_ok=True)
    blob = save({k: v.contiguous() for k, v in tensors.items()})
    atomic_write(folder / f"step-{step}.safetensors", lambda f: f.write(blob))
    text = json.dumps(meta, indent=1).encode()
    path = atomic_write(folder / f"step-{step}.json", lambda f: f.write(text))
    if keep_last > 0:
        for old in list_checkpoints(folder)[:-keep_last]:
            old.with_suffix(".json").unlink(missing_ok=True)
            old.with_suffix(".safetensors").unlink(missing_ok=True)
    return path


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints (JSON present, with its safetensors), oldest first, as paths without suffix."""
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _STEP.match(p.name)
        if m and p.with_suffix(".safetensors").exists():
            found.append((int(m.group(1)), p.with_suffix("")))
    return [p for _, p in sorted(found)]


def _earlier(base: Path) -> str:
    """How to use the checkpoint before `base`, or that there is none."""
    m = _STEP.match(base.name + ".json")
    earlier = [p for p in list_checkpoints(base.parent) if m and int(_STEP.match(p.name + ".json").group(1)) < int(m.group(1))]
    if not earlier:
        return "there is no earlier checkpoint in the run; retrain it (difflab train --force)"
    e = earlier[-1]
    return f"use the earlier {e.name} (--run {e}.safetensors, or to train on: --resume --from-step {e.name.split('-')[1]})"


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) of a checkpoint given as step-N, step-N.json or step-N.safetensors."""
    base = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    st, js = base.with_suffix(".safetensors"), base.with_suffix(".json")
    if not st.exists() or not js.exists():
        raise UserError(f"checkpoint {base} is incomplete or missing (need {st.name} and {js.name}); pick another in {base.parent}")
    try:
        meta = json.loads(js.read_text())
        tensors = load_file(str(st))
    except PermissionError as e:
        raise UserError(f"cannot read checkpoint {e.filename or st}: permission denied; make it readable (chmod u+r) or run as its owner") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"checkpoint metadata {js} is not valid JSON; the file is damaged: {_earlier(base)}") from None
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise UserError(f"checkpoint {st} cannot be read ({type(e).__name__}); the file is damaged: {_earlier(base)}") from None
    return tensors, meta
