"""`difflab import diffusers-vae DIR --out RUN`: a diffusers `AutoencoderKL` folder (config.json +
diffusion_pytorch_model.safetensors, e.g. a local copy of stabilityai/sd-vae-ft-mse) as an autoencoder run folder.

difflab's AutoencoderKL (nets/autoencoder_kl.py) uses diffusers' module names, so the state dict maps key for key
(older folders' attention names `query`/`key`/`value`/`proj_attn`, and 1x1-conv attention weights, are renamed and
reshaped as diffusers itself does). A config field difflab cannot honour is a one-line error naming it; weights are
read from safetensors only. diffusers itself is never imported.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from difflab.data import DataConfig
from difflab.errors import UserError
from difflab.interop.diffusers_folder import WEIGHTS, _read_config, _require, _with_defaults
from difflab.interop.guided_diffusion import write_run
from difflab.nets.autoencoder_kl import AutoencoderKLConfig
from difflab.runs import prepare_run_dir
from difflab.runs.autoencoder import AutoencoderModel, AutoencoderRunConfig

# AutoencoderKL's defaults (diffusers' signature), for keys a config leaves out.
VAE_DEFAULTS: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"], "up_block_types": ["UpDecoderBlock2D"],
    "block_out_channels": [64], "layers_per_block": 1, "act_fn": "silu", "latent_channels": 4, "norm_num_groups": 32,
    "sample_size": 32, "scaling_factor": 0.18215, "shift_factor": None, "latents_mean": None, "latents_std": None,
    "force_upcast": True, "use_quant_conv": True, "use_post_quant_conv": True, "mid_block_add_attention": True,
}
_ATTN_ALIASES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def vae_config_from_diffusers(data: dict, path: Path = Path("config.json")) -> tuple[AutoencoderKLConfig, float]:
    """(difflab AutoencoderKLConfig, diffusers' scaling_factor) of an AutoencoderKL config; a field it cannot honour is an error."""
    if data.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        raise UserError(f"{path}: model class {data.get('_class_name')!r} is not supported; difflab imports AutoencoderKL folders")
    c = _with_defaults(data, VAE_DEFAULTS, "AutoencoderKL", path)
    boc = [int(b) for b in c["block_out_channels"]]
    _require(len(c["down_block_types"]) == len(boc) == len(c["up_block_types"]), path, "block lists of different lengths")
    bad = [t for t in c["down_block_types"] if t != "DownEncoderBlock2D"] + [t for t in c["up_block_types"] if t != "UpDecoderBlock2D"]
    _require(not bad, path, f"block type {bad[0] if bad else ''!r} (only DownEncoderBlock2D / UpDecoderBlock2D)")
    _require(c["in_channels"] == c["out_channels"], path, f"in_channels {c['in_channels']} != out_channels {c['out_channels']}")
    _require(c["act_fn"] == "silu", path, f"act_fn {c['act_fn']!r}")
    for key in ("shift_factor", "latents_mean", "latents_std"):  # per-channel latent normalisations of later VAEs (SD3, Flux)
        _require(c[key] is None, path, f"{key} {c[key]!r}")
    size = c["sample_size"]
    if isinstance(size, (list, tuple)):
        _require(len(size) == 2 and size[0] == size[1], path, f"a non-square sample_size {size}")
        size = size[0]
    cfg = AutoencoderKLConfig(image_size=int(size), in_channels=int(c["in_channels"]), block_out_channels=tuple(boc),
                              layers_per_block=int(c["layers_per_block"]), latent_channels=int(c["latent_channels"]),
                              norm_num_groups=int(c["norm_num_groups"]), mid_attention=bool(c["mid_block_add_attention"]),
                              use_quant_conv=bool(c["use_quant_conv"]), use_post_quant_conv=bool(c["use_post_quant_conv"]))
    return cfg, float(c["scaling_factor"])


def vae_state_dict_from_diffusers(state: dict[str, Tensor], model: AutoencoderModel, path: Path) -> dict[str, Tensor]:
    """The autoencoder run's state dict (autoencoder.*) of a diffusers AutoencoderKL state dict; every key must match."""
    renamed: dict[str, Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if len(parts) >= 2 and parts[-2] in _ATTN_ALIASES:
            key = ".".join(parts[:-2] + [_ATTN_ALIASES[parts[-2]], parts[-1]])
        if ".attentions." in key and value.ndim == 4 and value.shape[-2:] == (1, 1):
            value = value[:, :, 0, 0]  # a 1x1-conv projection (original LDM checkpoints) is the Linear of diffusers' Attention
        renamed["autoencoder." + key] = value
    want = model.state_dict()
    missing, extra = sorted(set(want) - set(renamed)), sorted(set(renamed) - set(want))
    if missing or extra:
        what = f"has no '{missing[0][len('autoencoder.'):]}'" if missing else f"has '{extra[0][len('autoencoder.'):]}', which this config does not"
        raise UserError(f"{path} {what}: the weights do not match config.json's layout")
    for key, value in renamed.items():
        if tuple(value.shape) != tuple(want[key].shape):
            raise UserError(f"{path}: '{key[len('autoencoder.'):]}' is {tuple(value.shape)}, config.json's layout needs {tuple(want[key].shape)}")
    return {k: v.to(want[k].dtype).contiguous() for k, v in renamed.items()}


def import_diffusers_vae(folder: str | Path, out: str | Path, *, force: bool = False) -> Path:
    """Write the diffusers AutoencoderKL folder `folder` (or a pipeline folder's vae/) as an autoencoder run folder `out`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder, out = Path(folder).expanduser(), Path(out)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; give a diffusers AutoencoderKL folder (config.json + {WEIGHTS})")
    vae_dir = folder / "vae" if (folder / "vae" / "config.json").is_file() else folder
    if not (vae_dir / "config.json").is_file():
        raise UserError(f"{folder} has no config.json (nor vae/config.json): it is not a diffusers model folder")
    weights = vae_dir / WEIGHTS
    if not weights.is_file():
        pickled = sorted(p.name for p in vae_dir.glob("*.bin"))
        if pickled:
            raise UserError(f"{vae_dir} has only {pickled[0]}, a pickle that difflab never loads (it can run code); convert it to "
                            f"{WEIGHTS} (diffusers: model.save_pretrained(dir, safe_serialization=True))")
        raise UserError(f"{vae_dir} has no {WEIGHTS}; save the model with safetensors")
    model_cfg, scaling_factor = vae_config_from_diffusers(_read_config(vae_dir / "config.json", "AutoencoderKL"), vae_dir / "config.json")
    data = DataConfig(name="diffusers-import", image_size=model_cfg.image_size, channels="RGB" if model_cfg.in_channels == 3 else "auto",
                      labels="ignore")
    cfg = AutoencoderRunConfig(data=data, model=model_cfg)
    prepare_run_dir(out, resume=False, force=force, check_only=True)  # --force moves nothing until the new run is written
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{weights} is not a readable safetensors file ({e}); the folder is damaged") from None
    if any(not torch.is_floating_point(v) or not math.isfinite(float(v.abs().max())) for v in state.values() if v.numel()):
        raise UserError(f"{weights} holds NaN/inf or non-float tensors; it is not a trained AutoencoderKL")
    with torch.device("meta"):  # shapes only: the real tensors are the file's
        layout = AutoencoderModel(cfg)
    ours = vae_state_dict_from_diffusers(state, layout, weights)
    return write_run(out, cfg, ours, "model", {"from": "diffusers", "folder": str(folder), "scaling_factor": scaling_factor}, force=force)


__all__ = ["import_diffusers_vae", "vae_config_from_diffusers", "vae_state_dict_from_diffusers"]
