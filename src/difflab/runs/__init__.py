"""Runs: the run kinds (diffusion, dit, classifier, vae, dcgan), their configs and presets, the run folder, training and loading.

`train_run(cfg, out)` trains a config of any kind; `load_run(path)` loads any trained run; `run_kind(path)` tells
which kind a folder holds; `resolve_config(spec)` turns a preset, JSON file or run folder into a config.
"""

from difflab.runs.baselines import BaselineRunConfig, GANRunConfig, VAERunConfig
from difflab.runs.classifier import ClassifierRunConfig
from difflab.runs.diffusion import RunConfig, SampleConfig
from difflab.runs.folder import find_checkpoint, is_run, prepare_run_dir, run_kind, write_replacing
from difflab.runs.kind import RunKind
from difflab.runs.dit import DiTRunConfig
from difflab.runs.registry import DIFFUSION_KINDS, KINDS, PRESET_KINDS, get_kind, kind_of_config, preset_names, resolve_config
from difflab.runs.session import LoadedRun, init_model, load_run, train_run, training_session

__all__ = [
    "DIFFUSION_KINDS", "KINDS", "PRESET_KINDS", "BaselineRunConfig", "ClassifierRunConfig", "DiTRunConfig", "GANRunConfig", "LoadedRun", "RunConfig", "RunKind",
    "SampleConfig", "VAERunConfig", "find_checkpoint", "get_kind", "init_model", "is_run", "kind_of_config", "load_run",
    "preset_names", "prepare_run_dir", "write_replacing", "resolve_config", "run_kind", "train_run", "training_session",
]
