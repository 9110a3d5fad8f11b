"""Negative log-likelihood of held-out data under a trained run, in bits/dim: `difflab nll`.

method "vlb": the variational bound over all T steps, L_0 + ... + L_{T-1} + L_T (Ho et al. 2020 Eq. 5, as improved
DDPM reports it), estimated with one x_t per example and t by `losses.bits_per_dim` with the run's EMA weights.
method "ode": the probability-flow ODE likelihood (Song et al. 2021, App. D.2) of uniformly dequantised data, with a
Hutchinson trace estimator (eval/ode_likelihood.py), on the unclipped EMA model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from difflab.data import load_dataset, parse_data_spec
from difflab.errors import UserError
from difflab.training.dist import resolve_device

NLL_METHODS = ("vlb", "ode")


@dataclass(frozen=True)
class NLLRequest:
    run: Path
    data: str = "digits:test"  # name[:split] (a bare name: all its images), shaped like the run's training data
    method: str = "vlb"
    n: int | None = None  # first n examples; None: all
    batch_size: int = 64
    seed: int = 0  # the noise of the Monte-Carlo estimate
    device: str = "auto"
    rtol: float = 1e-5  # ode: RK45 tolerances (Song et al. use 1e-5)
    atol: float = 1e-5
    hutchinson: str = "rademacher"  # ode: rademacher, gaussian or exact (d vector-Jacobian products per evaluation)


def nll(req: NLLRequest, progress: bool = False) -> dict:
    """Bits/dim of req.data under the run; returns bits_per_dim, its standard error over examples, and details."""
    if req.method not in NLL_METHODS:
        raise UserError(f"unknown --method {req.method!r}; valid: {', '.join(NLL_METHODS)}")
    if req.method == "ode":
        from difflab.eval.ode_likelihood import check_ode_options

        check_ode_options(req.rtol, req.atol, req.hutchinson)
    if req.batch_size < 1 or (req.n is not None and req.n < 1):
        raise UserError("--n and --batch-size must be at least 1")
    from difflab.losses import bits_per_dim
    from difflab.runs import DIFFUSION_KINDS, load_run
    from difflab.runs.diffusion import check_data_fits_model

    device = resolve_device(req.device)
    run = load_run(req.run, kind=DIFFUSION_KINDS, ema=True, device=device)
    data = load_dataset(parse_data_spec(req.data, run.cfg.data))  # the run's shaping (channels, size)
    check_data_fits_model(run.cfg, data)
    n = len(data) if req.n is None else min(req.n, len(data))
    x = data.x[:n].to(device)
    conditional = run.cfg.model.num_classes is not None and data.y is not None
    y = data.y[:n].to(device) if conditional else None
    g = torch.Generator().manual_seed(req.seed)
    common = {"n": n, "T": run.denoiser.process.T, "conditional": conditional, "run": str(req.run),
              "checkpoint_step": run.step, "data": req.data, "seed": req.seed}
    if req.method == "ode":
        return {"method": req.method, **_ode(run.denoiser, x, y, g, req, progress), **common}
    t0 = time.perf_counter()
    res = bits_per_dim(run.denoiser, x, y, generator=g, batch_size=req.batch_size, progress=progress)
    seconds = time.perf_counter() - t0
    if not math.isfinite(res["total_bpd"]):
        raise UserError("the bound is not finite: the model produces NaN or inf; check the checkpoint")
    return {
        "method": req.method, "bits_per_dim": res["total_bpd"], "bits_per_dim_se": res["total_bpd_se"],
        "prior_bpd": res["prior_bpd"], **common,
        "seconds": round(seconds, 3), "vb_per_t": [float(v) for v in res["vb_per_t"]],
    }


def _ode(denoiser, x, y, g, req: NLLRequest, progress: bool) -> dict:
    """The ODE likelihood of the run's own probability flow: the same network without clipping of x0."""
    from difflab.denoiser import ModelDenoiser
    from difflab.eval.ode_likelihood import ode_bits_per_dim

    if denoiser.cfg.parameterization == "mu":
        raise UserError("--method ode needs eps at any noise level; a 'mu'-parameterised run is tied to its discrete steps: use --method vlb")
    flow = ModelDenoiser(denoiser.net, denoiser.process, denoiser.cfg, clip_x0=False)
    t0 = time.perf_counter()
    res = ode_bits_per_dim(flow, x, y, rtol=req.rtol, atol=req.atol, hutchinson=req.hutchinson, generator=g,
                           batch_size=req.batch_size, progress=progress)
    seconds = time.perf_counter() - t0
    keep = ("bits_per_dim", "bits_per_dim_se", "continuous_bpd", "continuous_bpd_se", "prior_bpd", "nfe_mean", "nfe",
            "sigma_min", "sigma_max", "dequantize", "levels")
    return {**{k: res[k] for k in keep}, "rtol": req.rtol, "atol": req.atol, "hutchinson": req.hutchinson,
            "seconds": round(seconds, 3), "per_example_bpd": [float(v) for v in res["per_example_bpd"]]}
