"""Every run kind by name, every preset of every kind, and resolving a preset, JSON file or run folder to a run config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from difflab.configs import apply_overrides, from_dict
from difflab.errors import UserError
from difflab.runs.autoencoder import KIND as AUTOENCODER_KIND
from difflab.runs.baselines import DCGAN_KIND, VAE_KIND
from difflab.runs.classifier import KIND as CLASSIFIER_KIND
from difflab.runs.diffusion import KIND as DIFFUSION_KIND
from difflab.runs.dit import KIND as DIT_KIND
from difflab.runs.folder import DEFAULT_KIND, kind_in, run_kind
from difflab.runs.kind import RunKind
from difflab.runs.student import KIND as STUDENT_KIND

KINDS: dict[str, RunKind] = {k.name: k for k in (DIFFUSION_KIND, DIT_KIND, CLASSIFIER_KIND, VAE_KIND, DCGAN_KIND, AUTOENCODER_KIND, STUDENT_KIND)}
# The diffusion models proper, whatever their network: trained at every timestep of the process and loaded as a Denoiser.
# What NLL, guidance sweeps, interpolation, the denoising chain and the comparison's step counts take; commands ask for
# these, never for one kind's name. (A few-step student also loads as a Denoiser, but only on its trained grids.)
DIFFUSION_KINDS: tuple[str, ...] = (DIFFUSION_KIND.name, DIT_KIND.name)


def _all_presets() -> dict[str, RunKind]:
    out: dict[str, RunKind] = {}
    for kind in KINDS.values():
        for name in kind.presets:
            if name in out:  # a preset name must say which kind it builds
                raise RuntimeError(f"preset {name!r} is defined by both the {out[name].name} and the {kind.name} kind")
            out[name] = kind
    return out


PRESET_KINDS: dict[str, RunKind] = _all_presets()


def get_kind(name: str) -> RunKind:
    """The kind called `name`; the error lists the valid kinds."""
    try:
        return KINDS[name]
    except KeyError:
        raise UserError(f"unknown run kind {name!r}; valid kinds: {', '.join(KINDS)}") from None


def kind_of_config(cfg: Any) -> RunKind:
    """The kind whose config class `cfg` is."""
    for kind in KINDS.values():
        if type(cfg) is kind.config_class:  # exact: a kind's config may extend another's (DiTRunConfig is a RunConfig)
            return kind
    raise TypeError(f"{type(cfg).__name__} is not the config of any run kind ({', '.join(KINDS)})")


def preset_names(kinds: tuple[str, ...] | None = None) -> list[str]:
    return sorted(n for n, k in PRESET_KINDS.items() if kinds is None or k.name in kinds)


def _read_config_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise UserError(f"cannot read config {path}: {e.strerror}; give a preset name or a readable JSON file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        where = f" ({e.msg} at line {e.lineno})" if isinstance(e, json.JSONDecodeError) else ""
        raise UserError(f"config file {path} is not valid JSON{where}; fix the file") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a JSON object; got {type(data).__name__}")
    return data


def resolve_config(spec: str | Path, overrides: list[str] | tuple[str, ...] = (), *, kinds: tuple[str, ...] | None = None) -> Any:
    """A preset name, a JSON config file or a run folder, of any kind (or one of `kinds`), with `key=value` overrides
    applied in order. A file's kind is its "kind" key (a run folder's as `run_kind` tells); none means diffusion."""
    spec = str(spec)
    allowed = ", ".join(preset_names(kinds))
    if spec in PRESET_KINDS:
        kind, cfg = PRESET_KINDS[spec], PRESET_KINDS[spec].presets[spec]()
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise UserError(f"{spec} is a folder without config.json; give a run folder, a JSON file or a preset ({allowed})")
            data = _read_config_file(path / "config.json")
            name = kind_in(data) or run_kind(path) or DEFAULT_KIND
        elif path.is_file():
            data = _read_config_file(path)
            name = kind_in(data) or DEFAULT_KIND
        else:
            raise UserError(f"unknown config '{spec}': not a preset ({allowed}) nor an existing JSON file or run folder")
        kind = get_kind(name)
        cfg = from_dict(kind.config_class, {**data, "kind": kind.name})
    if kinds is not None and kind.name not in kinds:
        raise UserError(f"'{spec}' is a {kind.name} config; this command takes {' or '.join(kinds)} configs (e.g. {allowed})")
    if any(item.partition("=")[0].strip() == "kind" for item in overrides):
        raise UserError("the run kind cannot be changed with --set; start from a preset of the kind you want "
                        f"({', '.join(preset_names())})")
    return apply_overrides(cfg, overrides)
