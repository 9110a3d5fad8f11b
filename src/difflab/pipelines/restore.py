"""Restoration from a trained run: the work behind `difflab inpaint | denoise | img2img | restore` (docs/restoration.md).

Inputs are an image file (`--image`) or the first n images of a data set (`--data digits:test`, loaded with the run's own
data settings); outputs are rows of [input | output | target] in a PNG grid and the same images in an .npz. The
algorithms (restoration/) see only a Denoiser; this module loads the run, checks the inputs against it, makes the labels
of a class-conditional model, runs the batches from one seeded generator and scores outputs when targets are known.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from difflab.data import load_dataset, parse_data_spec, save_image_grid, to_uint8_nhwc
from difflab.data.atomic import atomic_write
from difflab.denoiser import ModelDenoiser
from difflab.errors import UserError
from difflab.samplers import get_sampler, plan_steps, prior_sample, select_steps
from difflab.restoration import (
    ImageConditioned,
    build_degradation,
    color_error,
    denoise,
    inpaint_condition,
    make_masks,
    psnr,
    repaint,
    sdedit,
    strength_step,
)
from difflab.runs import DIFFUSION_KINDS, LoadedRun, load_run

# ----- runs ---------------------------------------------------------------------------------------------------------


def load_restoration_run(spec: str | Path, *, conditional: bool, command: str, device: str = "cpu", ema: bool = True) -> LoadedRun:
    """Load a run and check its kind: `difflab restore` needs an image-conditional model, the others an ordinary one."""
    run = load_run(spec, kind=DIFFUSION_KINDS, ema=ema, device=device)
    latent = getattr(run.cfg, "latent", None)
    if latent is not None and latent.enabled:  # its denoiser works on latents; these commands edit pixels
        raise UserError(f"{spec} is a latent run (latent.autoencoder {latent.autoencoder}): difflab {command} works on pixel-space "
                        "runs; sample, eval, compare and guidance work on latent runs (docs/latent.md)")
    condition = getattr(run.cfg, "condition", None)  # backbones without image conditioning have no section
    kind = "none" if condition is None else condition.kind
    if conditional and kind == "none":
        raise UserError(f"difflab {command} needs an image-conditional run (condition.kind sr, colorize or inpaint, e.g. "
                        f"`difflab train --config digits-sr`); {spec} is an ordinary diffusion model: use difflab inpaint / denoise / img2img")
    if not conditional and kind != "none":
        raise UserError(f"{spec} is an image-conditional model (condition.kind '{kind}'): it needs its condition y, so use "
                        f"`difflab restore --run {spec}`; difflab {command} works with an ordinary (unconditional or class-conditional) run")
    return run


def image_shape(run: LoadedRun) -> tuple[int, int]:
    """(channels, size) of the images the run generates."""
    return run.cfg.data_channels, run.cfg.model.image_size


# ----- inputs -------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Inputs:
    x: Tensor  # (N, C, H, W) in [-1, 1]: the given image repeated n times, or n data images
    labels: Tensor | None  # the data's labels (None for an image file)
    from_data: bool  # True: x are clean data images, the targets of the restoration


_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def read_image(path: str | Path, channels: int, size: int, what: str = "--image") -> Tensor:
    """(1, C, S, S) in [-1, 1] from an image file; wrong size or channels -> UserError (no silent resizing)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        with Image.open(path) as img:
            gray = img.mode in _GRAY_MODES
            arr = np.asarray(img.convert("L" if gray else "RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{what} {path} is not a readable image ({type(e).__name__}); give a PNG or JPEG file") from None
    c = 1 if arr.ndim == 2 else 3
    h, w = arr.shape[:2]
    if (h, w, c) != (size, size, channels):
        kind = lambda k: "grayscale (1 channel)" if k == 1 else "RGB (3 channels)"  # noqa: E731
        raise UserError(f"{what} {path} is a {w}x{h} {kind(c)} image but the model takes {size}x{size} {kind(channels)} images: "
                        "convert it first")
    x = torch.from_numpy(arr.reshape(h, w, c)).permute(2, 0, 1)[None]
    return x * 2 - 1


def load_inputs(run: LoadedRun, image: str | Path | None, data: str | None, n: int, *,
                size: int | None = None, channels: int | None = None) -> Inputs:
    """Exactly one of `image` (repeated n times) or `data` (its first n images, with the run's data settings).

    `size` / `channels` override the run's image shape for --image (the low-resolution input of a super-resolution run).
    """
    if (image is None) == (data is None):
        raise UserError("give exactly one of --image FILE or --data SPEC (e.g. --data digits:test)")
    if n < 1:
        raise UserError(f"--n must be at least 1; got {n}")
    c, s = image_shape(run)
    if image is not None:
        x = read_image(image, channels or c, size or s)
        return Inputs(x.expand(n, -1, -1, -1).clone(), None, False)
    d = load_dataset(parse_data_spec(data, run.cfg.data))
    if d.channels != c or d.image_size != s:
        raise UserError(f"data {data} are {d.channels}x{d.image_size}x{d.image_size} but the model takes {c}x{s}x{s}: "
                        "use data of the run's kind (its data.* settings are applied)")
    return Inputs(d.x[:n].clone(), d.y[:n].clone() if d.y is not None else None, True)


def class_labels(run: LoadedRun, n: int, label: str | None, data_labels: Tensor | None) -> Tensor | None:
    """Labels of a class-conditional run: `--class K` for all, `--class data` for the data's, else the trained null label.

    An unconditional run takes none (and refuses --class).
    """
    m = run.cfg.model
    if m.num_classes is None:
        if label is not None:
            raise UserError("--class needs a class-conditional run; this one has model.num_classes=null")
        return None
    if label == "data":
        if data_labels is None:
            raise UserError("--class data needs labelled --data; give --class K instead")
        return data_labels.clone()
    if label is not None:
        try:
            k = int(label)
        except ValueError:
            raise UserError(f"--class must be an integer 0..{m.num_classes - 1} or 'data'; got {label!r}") from None
        if not 0 <= k < m.num_classes:
            raise UserError(f"--class must be in 0..{m.num_classes - 1}; got {k}")
        return torch.full((n,), k)
    if m.class_dropout_null and run.cfg.train.label_dropout > 0:
        return torch.full((n,), m.num_classes)  # the null label: restore from the image alone
    raise UserError("this run is class-conditional and has no trained null label (train.label_dropout = 0): give --class K, or --class data with --data")


# ----- batches ------------------------------------------------------------------------------------------------------


def _batched(fn: Callable[..., Tensor], n: int, batch_size: int, *arrays: Tensor | None) -> Tensor:
    """fn(*slices) over consecutive slices of the arrays (None passes through), concatenated."""
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1; got {batch_size}")
    out = []
    for lo in range(0, n, batch_size):
        out.append(fn(*(a[lo:lo + batch_size] if a is not None else None for a in arrays)).cpu())
    return torch.cat(out).clamp(-1, 1)


def _sampler(run: LoadedRun, name: str | None, options: dict | None = None):
    """(spec, options) of a registered sampler (default the run's sample.sampler): the run's option defaults, then `options`."""
    spec = get_sampler(name or run.cfg.sample.sampler)
    return spec, {**run.cfg.sample.options_for(spec), **spec.parse_options(options)}


def _check_steps(n_steps: int, T: int) -> None:
    if not 1 <= n_steps <= T:
        raise UserError(f"--steps must be between 1 and T={T}; got {n_steps}")


# ----- the four tasks -----------------------------------------------------------------------------------------------


def inpaint_images(run: LoadedRun, x: Tensor, masks: Tensor, labels: Tensor | None, *, n_steps: int = 50, jump_length: int = 10,
                   jump_n_sample: int = 10, generator: torch.Generator | None = None, batch_size: int = 256, device: str = "cpu") -> Tensor:
    """RePaint on an ordinary run over `n_steps` linspace-respaced steps; returns (N, C, H, W) in [-1, 1]."""
    T = run.denoiser.process.T
    _check_steps(n_steps, T)
    steps = select_steps(run.denoiser.process, n_steps, "linspace")
    return _batched(lambda xb, mb, yb: repaint(run.denoiser, xb.to(device), mb.to(device), steps, jump_length=jump_length,
                                               jump_n_sample=jump_n_sample, y=None if yb is None else yb.to(device), generator=generator),
                    len(x), batch_size, x, masks, labels)


def denoise_images(run: LoadedRun, noisy: Tensor, sigma: float, labels: Tensor | None, *, sampler: str | None = "ddpm",
                   n_steps: int = 50, method: str = "sample", generator: torch.Generator | None = None, batch_size: int = 256,
                   device: str = "cpu", sampler_options: dict | None = None) -> Tensor:
    """Denoise images with known noise std `sigma` (tasks/denoise.py)."""
    _check_steps(n_steps, run.denoiser.process.T)
    spec, opts = _sampler(run, sampler, sampler_options)
    return _batched(lambda xb, yb: denoise(run.denoiser, xb.to(device), sigma, sampler=spec.fn, n_steps=n_steps, method=method,
                                           y=None if yb is None else yb.to(device), generator=generator, options=opts),
                    len(noisy), batch_size, noisy, labels)


def img2img_images(run: LoadedRun, x: Tensor, strength: float, labels: Tensor | None, *, sampler: str | None = "ddim",
                   n_steps: int = 50, generator: torch.Generator | None = None, batch_size: int = 256, device: str = "cpu",
                   sampler_options: dict | None = None) -> Tensor:
    """SDEdit at `strength` (tasks/img2img.py)."""
    strength_step(run.denoiser.process.T, strength)  # validates the strength before any work
    _check_steps(n_steps, run.denoiser.process.T)
    spec, opts = _sampler(run, sampler, sampler_options)
    return _batched(lambda xb, yb: sdedit(run.denoiser, xb.to(device), strength, sampler=spec.fn, n_steps=n_steps,
                                          y=None if yb is None else yb.to(device), generator=generator, options=opts),
                    len(x), batch_size, x, labels)


def restore_images(run: LoadedRun, obs: Tensor, labels: Tensor | None, *, sampler: str | None = None, n_steps: int | None = None,
                   spacing: str | None = None, generator: torch.Generator | None = None, batch_size: int = 256,
                   device: str = "cpu", sampler_options: dict | None = None) -> Tensor:
    """Sample an image-conditional run given observations `obs` (Degradation.observe): x ~ p(x | y = condition(obs)).

    For inpainting the known pixels of the observation are pasted into the output at the end.
    """
    cfg = run.cfg
    deg = build_degradation(cfg.condition, cfg.data_channels)
    spec, opts = _sampler(run, sampler, sampler_options)
    T = run.denoiser.process.T
    n_steps = n_steps or cfg.sample.steps
    _check_steps(n_steps, T)
    steps = plan_steps(run.denoiser.process, n_steps, spacing or cfg.sample.spacing)
    c, s = image_shape(run)

    def one(ob: Tensor, yb: Tensor | None) -> Tensor:
        ob = ob.to(device)
        den = ModelDenoiser(ImageConditioned(run.model, deg.condition(ob)), run.denoiser.process, cfg.denoiser)
        x_T = prior_sample(run.denoiser.process, (len(ob), c, s, s), generator, dtype=torch.float32).to(device)
        out = spec.fn(den, x_T, steps, y=None if yb is None else yb.to(device), generator=generator, **opts).clamp(-1, 1)
        keep = deg.known(ob)
        return out if keep is None else keep * deg.show(ob) + (1 - keep) * out

    return _batched(one, len(obs), batch_size, obs, labels)


def observations(run: LoadedRun, inputs: Inputs, mask: str | None, generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
    """(observations, keep-masks or None) for `difflab restore`: degraded data, or the --image read as the observation."""
    cfg = run.cfg
    deg = build_degradation(cfg.condition, cfg.data_channels)
    if cfg.condition.kind != "inpaint":
        if mask is not None:
            raise UserError(f"--mask is for inpainting runs; this run's condition.kind is '{cfg.condition.kind}'")
        return (deg.observe(inputs.x) if inputs.from_data else inputs.x), None
    masks = make_masks(mask or cfg.condition.mask, len(inputs.x), cfg.model.image_size, generator)
    return inpaint_condition(inputs.x, masks), masks


def observation_shape(run: LoadedRun) -> tuple[int, int]:
    """(channels, size) of an observation file for `difflab restore --image`: low-res for sr, gray for colorize."""
    c, s = image_shape(run)
    kind = run.cfg.condition.kind
    if kind == "sr":
        return c, s // run.cfg.condition.factor
    if kind == "colorize":
        return 1, s
    return c, s


def restoration_scores(kind: str, output: Tensor, target: Tensor, baseline: Tensor, hole: Tensor | None = None) -> dict[str, float]:
    """Mean PSNR (dB) of the output and of the trivial baseline against the target (and in the hole, for inpainting);
    the mean colour error for colorization."""
    scores = {"psnr": float(psnr(output, target).mean()), "psnr_baseline": float(psnr(baseline, target).mean())}
    if hole is not None:
        scores["psnr_hole"] = float(psnr(output, target, hole).mean())
        scores["psnr_hole_baseline"] = float(psnr(baseline, target, hole).mean())
    if kind == "colorize":
        scores["color_error"] = float(color_error(output, target).mean())
        scores["color_error_baseline"] = float(color_error(baseline, target).mean())
    return scores


# ----- outputs ------------------------------------------------------------------------------------------------------


def output_paths(out: Path) -> tuple[Path, Path]:
    """(grid .png, arrays .npz) for --out ending in either."""
    if out.suffix not in (".png", ".npz"):
        raise UserError(f"--out must end in .png or .npz (both are written: the grid and the arrays); got {out.name}")
    return out.with_suffix(".png"), out.with_suffix(".npz")


def check_outputs(out: Path, force: bool) -> tuple[Path, Path]:
    png, npz = output_paths(out)
    for p in (png, npz):
        if p.exists() and not force:
            raise UserError(f"{p} exists; choose another --out or add --force to overwrite it")
    return png, npz


def write_rows(out: Path, columns: dict[str, Tensor], labels: Tensor | None = None, extra: dict[str, Tensor] | None = None) -> tuple[Path, Path]:
    """A grid with one row [col_1 | col_2 | ...] per image (several rows side by side for many images) and an .npz:
    arr_0 = the outputs (column "output") as uint8 NHWC, arr_1 = labels when known, and every column under its name."""
    png, npz = output_paths(out)
    names = list(columns)
    n, k = len(columns[names[0]]), len(names)
    cells = torch.stack([columns[c].clamp(-1, 1) for c in names], 1).flatten(0, 1)  # row-major triples
    groups = max(1, min(n, round(math.sqrt(n / k) / 1.5)))  # triples side by side per grid row
    save_image_grid(cells, png, nrow=k * groups)
    arrays = {"arr_0": to_uint8_nhwc(columns["output"]), **{c: to_uint8_nhwc(v) for c, v in columns.items()}}
    if labels is not None:
        arrays["arr_1"] = labels.numpy().astype(np.int64)
    for key, v in (extra or {}).items():  # masks as (N, H, W) uint8 with 1 = known; images as uint8 NHWC
        arrays[key] = v[:, 0].round().to(torch.uint8).numpy() if key == "mask" else to_uint8_nhwc(v.clamp(-1, 1))
    atomic_write(npz, lambda f: np.savez(f, **arrays))
    return png, npz
