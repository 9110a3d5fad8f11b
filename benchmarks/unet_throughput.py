"""U-Net throughput: difflab's ddpm-cifar10 UNet vs diffusers' UNet2DModel of the same layout, on the CPU.

Measures a training step (forward + backward + AdamW step, train mode, dropout 0.1) and a no-grad
forward pass, both at batch 16 and 32x32. The two networks carry the same weights (diffusers' random
init converted into difflab's names) and are timed alternately within one run: every repetition times
each (network, task) pair once, the order flipping between repetitions, and the table reports medians
(and the fastest repetition, which is less sensitive to other jobs sharing the cores). The load average
before and after the run is printed, to tell a quiet machine from a shared one.

    .venv/bin/python benchmarks/unet_throughput.py --repeats 5
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from difflab.nets import build_unet, count_parameters, unet_preset
from difflab.interop.diffusers import DDPM_CIFAR10_DIFFUSERS, unet_state_dict_from_diffusers

DIFFUSERS_DDPM_CIFAR10 = {**DDPM_CIFAR10_DIFFUSERS, "attention_head_dim": None, "dropout": 0.1}  # one head, as in DDPM


def build_pair():
    """(difflab UNet, diffusers UNet2DModel) with identical weights."""
    try:
        import diffusers
    except ImportError:
        raise SystemExit("diffusers is needed for this benchmark: pip install -e '.[test]'") from None
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    torch.manual_seed(0)
    theirs = diffusers.UNet2DModel(**DIFFUSERS_DDPM_CIFAR10)
    cfg = unet_preset("ddpm-cifar10")
    ours = build_unet(cfg)
    ours.load_state_dict(unet_state_dict_from_diffusers(theirs.state_dict(), cfg), strict=True)
    return ours, theirs, diffusers.__version__


def make_tasks(ours, theirs, batch: int, size: int):
    """name -> zero-argument callable running one unit of work (one train step, or one forward pass)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, size, size, generator=g)
    eps = torch.randn(batch, 3, size, size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)

    def train_step(model, opt, call):
        def run():
            model.train()
            loss = F.mse_loss(call(model), eps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return run

    def forward(model, call):
        def run():
            model.eval()
            with torch.inference_mode():
                call(model)

        return run

    call_ours = lambda m: m(x, t)  # noqa: E731
    call_theirs = lambda m: m(x, t).sample  # noqa: E731
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    opt_theirs = torch.optim.AdamW(theirs.parameters(), lr=1e-4)
    return {
        ("train step", "difflab"): train_step(ours, opt_ours, call_ours),
        ("train step", "diffusers"): train_step(theirs, opt_theirs, call_theirs),
        ("forward", "difflab"): forward(ours, call_ours),
        ("forward", "diffusers"): forward(theirs, call_theirs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions of every (network, task) pair")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repetitions first")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=32, help="image height = width")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    load_before = os.getloadavg()[0]
    ours, theirs, diffusers_version = build_pair()
    tasks = make_tasks(ours, theirs, args.batch, args.size)
    keys = list(tasks)
    for _ in range(args.warmup):
        for key in keys:
            tasks[key]()
    times: dict = {key: [] for key in keys}
    cpu_times: dict = {key: [] for key in keys}
    for rep in range(args.repeats):
        for key in keys if rep % 2 == 0 else keys[::-1]:  # alternate, flipping the order each repetition
            start, start_cpu = time.perf_counter(), time.process_time()
            tasks[key]()
            times[key].append(time.perf_counter() - start)
            cpu_times[key].append(time.process_time() - start_cpu)

    print(f"# U-Net throughput, {datetime.date.today().isoformat()}")
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), diffusers {diffusers_version}"
    )
    print(
        f"# ddpm-cifar10 ({count_parameters(ours):,} parameters), batch {args.batch}, {args.size}x{args.size}, "
        f"float32, {args.repeats} interleaved repeats after {args.warmup} warm-up"
    )
    print(f"# 1-minute load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print()
    print("| task | statistic | difflab img/s | diffusers img/s | difflab / diffusers |")
    print("|---|---|---:|---:|---:|")
    for task in ("train step", "forward"):
        for stat_name, stat in (("median", statistics.median), ("best", min)):
            ours_s, theirs_s = stat(times[(task, "difflab")]), stat(times[(task, "diffusers")])
            print(
                f"| {task} | {stat_name} | {args.batch / ours_s:.2f} | {args.batch / theirs_s:.2f} | "
                f"{theirs_s / ours_s:.2f}x |"
            )
    if torch.get_num_threads() == 1:
        # One thread: process CPU time is the compute itself, little affected by other jobs sharing the cores.
        for task in ("train step", "forward"):
            ours_s = statistics.median(cpu_times[(task, "difflab")])
            theirs_s = statistics.median(cpu_times[(task, "diffusers")])
            print(
                f"| {task} | median CPU time | {args.batch / ours_s:.2f} | {args.batch / theirs_s:.2f} | "
                f"{theirs_s / ours_s:.2f}x |"
            )
    print()
    for key in keys:
        print(f"# {key[0]:<10} {key[1]:<9} seconds: {' '.join(f'{s:.3f}' for s in times[key])}")
        print(f"# {'':<10} {'':<9} CPU s:   {' '.join(f'{s:.3f}' for s in cpu_times[key])}")


if __name__ == "__main__":
    main()
