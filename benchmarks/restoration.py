"""Restoration on held-out digits (digits:test, 297 images), each task against a trivial baseline (issue 4).

- Inpainting (center and left masks): does the filled digit keep its class? Accuracy of the INDEPENDENT `digits`
  feature classifier (docs/evaluation.md; not trained on anything here) against the true label, for the clean digits,
  the masked input (hole mid-gray, or erased to the background), RePaint with an unconditional run (with and without
  resampling), and the trained inpainting model (digits-inpaint). Also PSNR in the hole.
- Super-resolution 4x4 -> 8x8 (digits-sr): PSNR of nearest / bilinear / bicubic up-sampling vs the model (one sample,
  and the mean of K samples, an estimate of the posterior mean), plus the classifier's accuracy on each.
- Colorization of the synthetic tinted digits (digits-color): mean per-pixel RGB error (0..1 scale) and PSNR of the
  gray input vs the model (one sample, mean of K samples).
- Denoising with the unconditional run at known noise levels: PSNR of the noisy input, a posterior sample and the
  posterior mean, and classifier accuracy.
- SDEdit: faithfulness (PSNR to the input) vs the class kept, over the strength.

Runs (commands as in docs/benchmarks.md):

    difflab train --config digits --out R/uncond --set train.steps=2000 --set model.class_dropout_null=false --set model.num_classes=null
    difflab train --config digits-sr --out R/sr;  difflab train --config digits-color --out R/color
    difflab train --config digits-inpaint --out R/inpaint
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/restoration.py --uncond R/uncond --sr R/sr --color R/color --inpaint R/inpaint
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from difflab.data import DataConfig, load_dataset
from difflab.eval.sources import build_extractor
from difflab.restoration import build_degradation, color_error, make_masks, psnr, upsample
from difflab.restoration.conditioning import downsample
from difflab.pipelines.restore import denoise_images, img2img_images, inpaint_images, load_restoration_run, restore_images


def accuracy(extractor, x: torch.Tensor, y: torch.Tensor) -> float:
    """Agreement of the digits classifier's prediction with the labels y."""
    logits = torch.from_numpy(extractor.extract(x.clamp(-1, 1))["logits"])
    return float((logits.argmax(1) == y).double().mean())


def posterior_samples(run, obs, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(first sample, mean of k samples) of an image-conditional run given the observations."""
    outs = [restore_images(run, obs, None, generator=torch.Generator().manual_seed(seed + i)) for i in range(k)]
    return outs[0], torch.stack(outs).mean(0)


def bench_inpaint(args, ext, x, y) -> list[dict]:
    rows = []
    uncond = load_restoration_run(args.uncond, conditional=False, command="inpaint") if args.uncond else None
    cond = load_restoration_run(args.inpaint, conditional=True, command="restore") if args.inpaint else None
    for mask_name in ("center", "left"):
        m = make_masks(mask_name, len(x), 8)
        hole = 1 - m
        entries = [("clean digits", x), ("masked input (hole mid-gray)", x * m), ("masked input (hole erased to background)", x * m - hole)]
        if uncond is not None:
            for label, r in (("RePaint, no resampling (r = 1)", 1), ("RePaint (j = 10, r = 10)", 10)):
                t0 = time.perf_counter()
                out = inpaint_images(uncond, x, m, None, n_steps=args.repaint_steps, jump_length=10, jump_n_sample=r,
                                     generator=torch.Generator().manual_seed(args.seed))
                entries.append((f"{label}, unconditional model [{time.perf_counter() - t0:.0f}s]", out))
        if cond is not None:
            t0 = time.perf_counter()
            out = restore_images(cond, torch.cat([x * m, m], 1), None, generator=torch.Generator().manual_seed(args.seed))  # pastes the known pixels
            entries.append((f"trained inpainting model (digits-inpaint) [{time.perf_counter() - t0:.0f}s]", out))
        for label, img in entries:
            rows.append({"task": "inpaint", "mask": mask_name, "method": label, "accuracy": accuracy(ext, img, y),
                         "psnr_hole": float(psnr(img, x, hole).mean()) if "clean" not in label else None})
    return rows


def bench_sr(args, ext, x, y) -> list[dict]:
    run = load_restoration_run(args.sr, conditional=True, command="restore")
    f = run.cfg.condition.factor
    low = downsample(x, f)
    entries = [(f"{mode} up-sampling", upsample(low, 8, mode)) for mode in ("nearest", "bilinear", "bicubic")]
    t0 = time.perf_counter()
    one, mean = posterior_samples(run, low, args.k, args.seed)
    sec = time.perf_counter() - t0
    entries += [("digits-sr, one sample", one), (f"digits-sr, mean of {args.k} samples [{sec:.0f}s]", mean)]
    rows = [{"task": "sr", "method": label, "psnr": float(psnr(img, x).mean()), "accuracy": accuracy(ext, img, y)} for label, img in entries]
    rows.append({"task": "sr", "method": "clean digits (8x8)", "psnr": None, "accuracy": accuracy(ext, x, y)})
    return rows


def bench_color(args) -> list[dict]:
    run = load_restoration_run(args.color, conditional=True, command="restore")
    d = load_dataset(DataConfig(name="digits-color", split="test"))
    x = d.x[: args.n]
    deg = build_degradation(run.cfg.condition, 3)
    gray = deg.observe(x)
    t0 = time.perf_counter()
    one, mean = posterior_samples(run, gray, args.k, args.seed)
    sec = time.perf_counter() - t0
    entries = [("gray input (luma repeated)", deg.baseline(gray)), ("digits-color, one sample", one),
               (f"digits-color, mean of {args.k} samples [{sec:.0f}s]", mean)]
    return [{"task": "colorize", "method": label, "color_error": float(color_error(img, x).mean()), "psnr": float(psnr(img, x).mean())}
            for label, img in entries]


def bench_denoise(args, ext, x, y) -> list[dict]:
    run = load_restoration_run(args.uncond, conditional=False, command="denoise")
    rows = []
    for sigma in args.sigmas:
        g = torch.Generator().manual_seed(args.seed)
        noisy = x + sigma * torch.randn(x.shape, generator=g)
        sample = denoise_images(run, noisy, sigma, None, sampler="ddpm", n_steps=50, method="sample", generator=g)
        mean = denoise_images(run, noisy, sigma, None, method="mean", generator=g)
        for label, img in (("noisy input", noisy), ("posterior sample (ddpm, 50 steps)", sample), ("posterior mean (1 NFE)", mean)):
            rows.append({"task": "denoise", "sigma": sigma, "method": label, "psnr": float(psnr(img.clamp(-1, 1), x).mean()),
                         "accuracy": accuracy(ext, img.clamp(-1, 1), y)})
    return rows


def bench_sdedit(args, ext, x, y) -> list[dict]:
    run = load_restoration_run(args.uncond, conditional=False, command="img2img")
    rows = []
    for s in (0.1, 0.3, 0.5, 0.7, 0.9, 1.0):
        out = img2img_images(run, x, s, None, sampler="ddim", n_steps=50, generator=torch.Generator().manual_seed(args.seed))
        rows.append({"task": "sdedit", "strength": s, "psnr_to_input": float(psnr(out, x).mean()), "accuracy": accuracy(ext, out, y)})
    return rows


def markdown(rows: list[dict]) -> str:
    def fmt(v):
        return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        sub = [r for r in rows if r["task"] == task]
        keys = [k for k in sub[0] if k != "task"]
        out += [f"### {task}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        out += ["| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in sub]
        out.append("")
    return "\n".join(out)


def main() -> None:
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--uncond", type=Path, help="an unconditional digits run (RePaint, denoising, SDEdit)")
    p.add_argument("--sr", type=Path, help="a digits-sr run")
    p.add_argument("--color", type=Path, help="a digits-color run")
    p.add_argument("--inpaint", type=Path, help="a digits-inpaint run")
    p.add_argument("--n", type=int, default=297, help="test images (default all 297)")
    p.add_argument("--k", type=int, default=8, help="samples averaged for the posterior-mean rows")
    p.add_argument("--repaint-steps", type=int, default=50)
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.2, 0.5, 1.0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", type=Path, default=Path("~/.cache/difflab").expanduser())
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = p.parse_args()
    ext = build_extractor("digits", cache_dir=args.cache_dir)
    d = load_dataset(DataConfig(name="digits", split="test"))
    x, y = d.x[: args.n], d.y[: args.n]
    rows = []
    t0 = time.perf_counter()
    if args.uncond or args.inpaint:
        rows += bench_inpaint(args, ext, x, y)
    if args.sr:
        rows += bench_sr(args, ext, x, y)
    if args.color:
        rows += bench_color(args)
    if args.uncond:
        rows += bench_denoise(args, ext, x, y)
        rows += bench_sdedit(args, ext, x, y)
    print(markdown(rows))
    print(f"total {time.perf_counter() - t0:.0f}s; {len(x)} test digits; digits classifier test accuracy {ext.info.get('test_accuracy')}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
