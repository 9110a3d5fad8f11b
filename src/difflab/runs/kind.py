"""A run kind: everything one family of trained models needs to be trained, loaded back and sampled, defined once.

Each kind (diffusion, classifier, vae, dcgan; runs/registry.py lists them) is one `RunKind` value built in its own
module. The generic code (runs/session.py: `train_run`, `load_run`) only ever asks the kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from difflab.data import DataConfig, ImageData


@dataclass(frozen=True)
class RunKind:
    name: str  # stored as "kind" in config.json and in every checkpoint's JSON
    summary: str  # one line for `difflab config` / error messages
    config_class: type  # the frozen run-config dataclass (it has a `kind` field equal to `name`)
    presets: Mapping[str, Callable[[], Any]]  # preset name -> config factory
    build_model: Callable[[Any], nn.Module]  # config -> the network (not seeded: session.init_model seeds it)
    build_task: Callable[[Any, nn.Module, torch.device], Any]  # (config, model, device) -> the Trainer's TrainTask
    data_config: Callable[[Any], DataConfig]  # the training data as this kind reads it (labels kept, ignored or required)
    check_data: Callable[[Any, ImageData], None]  # one-line error when the data do not fit the network
    uses_labels: Callable[[Any], bool]  # whether the Trainer is given the data's labels
    frozen: tuple[str, ...]  # config sections that must equal config.json on --resume
    changeable: str  # what may change on resume, for the error message
    train_hint: str  # how to train one, e.g. "difflab train --config digits"
    image_shape: Callable[[Any], tuple[int, int, int]]  # (C, H, W) of the images the run makes or reads
    plot_keys: tuple[str, ...] = ("loss", "grad_norm", "lr")  # metrics.jsonl columns of plots/loss.png
    after_training: Callable[[Any, Any, Path], None] | None = None  # (config, trainer, out) once training finished: reports
    denoiser: Callable[[Any, nn.Module], Any] | None = None  # diffusion kinds: (config, net) -> Denoiser
    classifier: Callable[[Any, nn.Module], Any] | None = None  # classifier kinds: (config, net) -> NoisyClassifier
    # One-shot generators (VAE, DCGAN): (net, z-batch generator, n) -> images; their latent dimension from the config.
    generate: Callable[[nn.Module, Tensor], Tensor] | None = None
    latent_dim: Callable[[Any], int] | None = None
    # Latent runs (runs/latent.py): (config, pixel data, device) -> (config with what was measured, the data the network
    # trains on); and (config, device) -> the map from what the sampler draws to images, or None in pixel space.
    prepare_data: Callable[[Any, ImageData, torch.device], tuple[Any, ImageData]] | None = None
    decoder: Callable[[Any, torch.device], Callable[[Tensor], Tensor] | None] | None = None

    @property
    def samplable(self) -> bool:
        return self.denoiser is not None or self.generate is not None
