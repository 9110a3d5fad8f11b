"""Bits/dim of held-out digits from the variational bound and from the probability-flow ODE (issue 3).

    .venv/bin/python benchmarks/ode_vs_vlb.py --run runs/demo [--n 297] [--exact-n 32]

Prints one line per estimate: the VLB over all T steps; the ODE with Rademacher probes at rtol = atol = 1e-5 (Song et
al.'s setting) and at 1e-3; the ODE's Monte-Carlo spread over seeds (dequantisation + probes); and, on the first
--exact-n digits, the exact divergence next to the Rademacher estimate on the same dequantised points. One torch thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/demo"))
    ap.add_argument("--data", default="digits:test")
    ap.add_argument("--n", type=int, default=None, help="first n examples (default all)")
    ap.add_argument("--exact-n", type=int, default=32, help="examples for the exact-divergence comparison (0: skip)")
    ap.add_argument("--seeds", type=int, default=3, help="ODE repeats with different seeds at rtol 1e-5")
    ap.add_argument("--out", type=Path, default=None, help="write all numbers as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from difflab.data import load_dataset, parse_data_spec
    from difflab.denoiser import ModelDenoiser
    from difflab.pipelines.nll import NLLRequest, nll
    from difflab.eval.ode_likelihood import ode_bits_per_dim
    from difflab.runs.session import load_run

    rows = {}

    def report(name: str, res: dict) -> None:
        extra = f", mean NFE {res['nfe_mean']:.0f}" if "nfe_mean" in res else ""
        print(f"{name:<34} {res['bits_per_dim']:.4f} ± {res['bits_per_dim_se']:.4f} bits/dim  ({res['seconds']:.0f}s{extra})",
              flush=True)
        rows[name] = {k: v for k, v in res.items() if k not in ("vb_per_t", "per_example_bpd")}

    base = NLLRequest(run=args.run, data=args.data, n=args.n, batch_size=64)
    report("vlb (T steps, 1 draw each)", nll(dataclasses.replace(base, method="vlb")))
    for seed in range(args.seeds):
        report(f"ode rademacher 1e-5 seed {seed}", nll(dataclasses.replace(base, method="ode", seed=seed)))
    report("ode rademacher 1e-3", nll(dataclasses.replace(base, method="ode", rtol=1e-3, atol=1e-3)))

    if args.exact_n > 0:  # the same dequantisation draw (seed 0; u is drawn before the probes) for both estimators
        run = load_run(args.run, ema=True)
        data = load_dataset(parse_data_spec(args.data, dataclasses.replace(run.cfg.data, split="test")))
        x = data.x[: args.exact_n]
        y = data.y[: args.exact_n] if run.cfg.model.num_classes is not None and data.y is not None else None  # as nll()
        flow = ModelDenoiser(run.denoiser.net, run.denoiser.process, run.denoiser.cfg, clip_x0=False)
        for kind in ("exact", "rademacher"):
            t0 = time.perf_counter()
            res = ode_bits_per_dim(flow, x, y, hutchinson=kind, generator=torch.Generator().manual_seed(0),
                                   batch_size=args.exact_n)
            res["seconds"] = time.perf_counter() - t0
            report(f"ode {kind} 1e-5, first {args.exact_n}", res)
            rows[f"ode {kind} 1e-5, first {args.exact_n}"]["per_example_bpd"] = [float(v) for v in res["per_example_bpd"]]
        a = torch.tensor(rows[f"ode exact 1e-5, first {args.exact_n}"]["per_example_bpd"])
        b = torch.tensor(rows[f"ode rademacher 1e-5, first {args.exact_n}"]["per_example_bpd"])
        print(f"rademacher - exact per example: mean {float((b - a).mean()):+.4f}, sd {float((b - a).std()):.4f} bits/dim; "
              f"sd of exact over examples {float(a.std()):.4f}")
        rows["rademacher_minus_exact_sd"] = float((b - a).std())
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"(log2(127.5) = {math.log2(127.5):.4f} separates bits/dim from the continuous density's)")


if __name__ == "__main__":
    main()
