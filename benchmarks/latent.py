"""Pixel vs latent diffusion at 32x32 on the CPU (issue 11): the table of docs/benchmarks.md, "Latent diffusion".

    flock /tmp/difflab-bench.lock .venv/bin/python benchmarks/latent.py --out runs/issue11-latent [--ae-budget 4] [--budget 3] [--n 500]

Data: the 8x8 digits upscaled to 32x32 (bicubic, data.image_size=32). Trains, each for a budget of **training CPU
time** (time.process_time, one torch thread): the f = 4 autoencoder `digits32-ae` (8x8x4 latents); then, at equal
budgets, a pixel U-Net on the 32x32 images, the latent U-Net `digits32-latent` and a latent DiT (patch 2, 16 tokens).
Each draws --n class-cycling samples with DDIM-50 (images/s includes decoding). Scores: FID / precision / recall in the
`digits` feature space (docs/evaluation.md) of the images average-pooled 4x back to 8x8, against the 297 held-out
test digits processed the same way; the floor row scores --n training images. The autoencoder's rFID scores its
reconstructions of the test split against the same reference (its PSNR is on the 32x32 images). Prints one table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def pooled_npz(images: torch.Tensor, path: Path) -> Path:
    """Images (N, 1, 32, 32) in [-1, 1] -> average-pooled 8x8, written as the uint8 .npz `difflab eval` reads."""
    from difflab.data import to_uint8_nhwc, write_npz_samples

    write_npz_samples(path, to_uint8_nhwc(F.avg_pool2d(images.float(), 4).clamp(-1, 1)), None)
    return path


def score(samples: Path, ref: Path) -> dict:
    from difflab.pipelines.evaluate import EvalRequest, evaluate

    res = evaluate(EvalRequest(samples=str(samples), ref=str(ref), features="digits", metrics=("fid", "precision", "recall"),
                               cache_dir=str(Path.home() / ".cache" / "difflab")))  # the CLI's default cache of the digits CNN
    return {k: res[k] for k in ("fid", "precision", "recall")}


def train(cfg, out: Path, budget_min: float) -> tuple[Path, float, int]:
    """Train `cfg` into `out` for `budget_min` minutes of this process's CPU time; (run, CPU minutes, steps)."""
    from difflab.runs import train_run

    if (out / "config.json").exists():
        return out, json.loads((out / "bench.json").read_text())["cpu_min"], json.loads((out / "bench.json").read_text())["steps"]
    t0 = time.process_time()
    train_run(cfg, out, progress=False, budget_seconds=60 * budget_min, budget_clock=time.process_time)
    cpu = (time.process_time() - t0) / 60
    steps = max(int(p.stem.split("-")[1]) for p in (out / "checkpoints").glob("step-*.json"))
    (out / "bench.json").write_text(json.dumps({"cpu_min": cpu, "steps": steps}) + "\n")
    return out, cpu, steps


def long_constant(train_cfg):
    """A budget decides when training stops: many steps, constant learning rate after warm-up, rare checkpoints."""
    return dataclasses.replace(train_cfg, steps=10**6, lr_schedule="constant", checkpoint_every=10**6, sample_every=0, log_every=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/issue11-latent"))
    ap.add_argument("--ae-budget", type=float, default=4.0, help="autoencoder training, CPU minutes")
    ap.add_argument("--budget", type=float, default=3.0, help="each diffusion model's training, CPU minutes")
    ap.add_argument("--n", type=int, default=500, help="samples per model")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from difflab.data import DataConfig, load_dataset
    from difflab.nets.presets import count_parameters
    from difflab.pipelines.sample import SampleRequest, generate
    from difflab.runs import load_run, resolve_config
    from difflab.runs.autoencoder import reconstruct
    from difflab.runs.dit import DiTRunConfig
    from difflab.runs.latent_config import LatentConfig

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    test = load_dataset(DataConfig(name="digits", split="test", image_size=32))
    ref = pooled_npz(test.x, out / "ref_test.npz")
    rows = []

    # The autoencoder: its discriminator starts at step 400 (the preset's 1,000 is past a few-minute budget).
    ae_cfg = resolve_config("digits32-ae", ["loss.disc_start=400"])
    ae_cfg = dataclasses.replace(ae_cfg, train=long_constant(ae_cfg.train))
    ae_dir, ae_cpu, ae_steps = train(ae_cfg, out / "ae", args.ae_budget)
    ae_run = load_run(ae_dir)
    rec = json.loads((ae_dir / "reconstruction.json").read_text())
    r = score(pooled_npz(reconstruct(ae_run.model.autoencoder, test.x), out / "ae_recon.npz"), ref)
    ae_line = (f"autoencoder digits32-ae: {count_parameters(ae_run.model.autoencoder):,} parameters, {ae_steps} steps in {ae_cpu:.1f} "
               f"CPU-min; PSNR {rec['psnr_db']:.2f} dB, rFID {r['fid']:.2f} (precision {r['precision']:.3f}, recall {r['recall']:.3f})")
    print(ae_line, flush=True)

    latent = LatentConfig(autoencoder=str(ae_dir.resolve()))
    unet_latent = resolve_config("digits32-latent", [f"latent.autoencoder={ae_dir.resolve()}"])
    base_dit = resolve_config("digits-dit")
    dit_latent = DiTRunConfig(
        data=unet_latent.data, model=dataclasses.replace(base_dit.model, image_size=8, in_channels=4, out_channels=4),
        process=base_dit.process, denoiser=dataclasses.replace(base_dit.denoiser, clip_x0=False), loss=base_dit.loss,
        train=base_dit.train, sample=base_dit.sample, latent=latent)
    pixel = resolve_config("digits-cond", ["data.image_size=32", "model.channel_mult=[1,1,2,3]", "model.attention_resolutions=[1]",
                                           "model.image_size=32", "model.attention_resolutions=[4]"])
    models = [("pixel U-Net (32x32x1)", pixel), ("latent U-Net (8x8x4)", unet_latent), ("latent DiT-2 (8x8x4, 16 tokens)", dit_latent)]
    for name, cfg in models:
        cfg = dataclasses.replace(cfg, train=long_constant(cfg.train))
        run_dir, cpu, steps = train(cfg, out / name.split(" (")[0].replace(" ", "-"), args.budget)
        run = load_run(run_dir)
        res = generate(SampleRequest(run=run, n=args.n, sampler="ddim", steps=50, batch_size=250, device="cpu"))
        s = score(pooled_npz(res.images, out / f"{run_dir.name}_samples.npz"), ref)
        rows.append((name, count_parameters(run.model), cpu, steps, args.n / res.seconds, s))
        print(f"{name}: {steps} steps, {res.images.shape[1:]} images, {s}", flush=True)

    train_data = load_dataset(DataConfig(name="digits", split="train", image_size=32))
    floor = score(pooled_npz(train_data.x[: args.n], out / "floor.npz"), ref)
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {cpu_model()}, {os.cpu_count()} cores, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}; torch {torch.__version__}, one thread")
    print(ae_line)
    print("| model | params | training CPU-min | steps | sampling images/s (DDIM-50) | FID | precision | recall |")
    print("|---|---|---|---|---|---|---|---|")
    for name, params, cpu, steps, ips, s in rows:
        print(f"| {name} | {params / 1e6:.2f} M | {cpu:.1f} | {steps:,} | {ips:.1f} | {s['fid']:.2f} | {s['precision']:.3f} | {s['recall']:.3f} |")
    print(f"| real data (floor, {args.n} training images) | – | – | – | – | {floor['fid']:.2f} | {floor['precision']:.3f} | {floor['recall']:.3f} |")


if __name__ == "__main__":
    main()
