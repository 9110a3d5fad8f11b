"""Choosing which timesteps a sampler visits: a decreasing list of integer indices into the process."""

from __future__ import annotations

from typing import Literal

import numpy as np

Spacing = Literal["leading", "trailing", "linspace", "quadratic", "karras", "logsnr", "logsnr-jump"]
SPACINGS: tuple[str, ...] = ("leading", "trailing", "linspace", "quadratic", "karras", "logsnr", "logsnr-jump")
SIGMA_SPACINGS: tuple[str, ...] = ("karras", "logsnr", "logsnr-jump")  # need the process's sigma table


def timesteps(T: int, n: int, spacing: Spacing = "leading", *, sigmas=None, rho: float = 7.0, sigma_jump: float = 5.0,
              karras_sigma_max: float = 80.0) -> list[int]:
    """n distinct timesteps in 0..T-1, returned high to low (the order a sampler visits them).

    leading: 0, k, 2k, ... (DDIM's uniform skip, k = T // n); trailing: T-1, T-1-k, ... (ends at the
    noisiest step; Lin et al. 2024); linspace: evenly spaced over [0, T-1] incl. both ends (improved
    DDPM's respacing); quadratic: t_i = (i / n)^2 T-ish, denser at low noise (DDIM Sec. D.2).
    The sigma spacings need `sigmas`, the process's increasing (T,) sigma table (`select_steps` passes it); their
    noise levels are mapped to the nearest timesteps in log sigma:
      karras: EDM's rho-schedule (Karras et al. 2022, Eq. 5) from min(sigma_{T-1}, karras_sigma_max = 80) down to
        sigma_0, T-1 first when sigma_{T-1} is larger; rho < 0 is allowed (denser at low noise than logsnr).
      logsnr: log-uniform sigmas, i.e. uniform log-SNR (DPM-Solver's choice).
      logsnr-jump: T-1, then log-uniform from sigma_jump = 5 down to sigma_0. Data in [-1, 1] is invisible under
        sigma >> 1, where D(x; sigma) ~ E[x_0] and one exponential-integrator step is accurate; the other steps
        go where the data has structure.
    """
    if not 1 <= n <= T:
        raise ValueError(f"number of steps must be in 1..{T}; got {n}")
    if spacing in SIGMA_SPACINGS:
        if sigmas is None or len(sigmas) != T:
            raise ValueError(f"spacing {spacing!r} needs the process's sigma table (length {T}); "
                             "use select_steps(process, n, spacing)")
        sig = np.asarray(sigmas, dtype=np.float64)
        if spacing == "karras":
            jump = sig[-1] > karras_sigma_max and n >= 3
            target = karras_sigmas(sig[0], karras_sigma_max if jump else sig[-1], n - jump, rho)
            target = np.concatenate([[sig[-1]], target]) if jump else target
        elif spacing == "logsnr" or n < 3 or sigma_jump >= sig[-1]:
            target = np.geomspace(sig[-1], sig[0], n)
        else:
            target = np.concatenate([[sig[-1]], np.geomspace(max(sigma_jump, sig[0]), sig[0], n - 1)])
        return nearest_timesteps(sig, target)
    if spacing == "leading":
        k = T // n
        ts = np.arange(n) * k
    elif spacing == "trailing":
        k = T / n
        ts = np.round(T - 1 - np.arange(n) * k).astype(int)[::-1]
    elif spacing == "linspace":
        ts = np.round(np.linspace(0, T - 1, n)).astype(int)
    elif spacing == "quadratic":
        ts = np.round(np.linspace(0, np.sqrt(T * 0.8), n) ** 2).astype(int)
    else:
        raise ValueError(f"unknown spacing {spacing!r}; valid: {', '.join(SPACINGS)}")
    ts = sorted(set(int(t) for t in ts))
    if len(ts) != n:  # rounding collided: fall back to distinct evenly spaced steps
        ts = sorted(set(int(t) for t in np.linspace(0, T - 1, n).round()))
    return ts[::-1]


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> np.ndarray:
    """sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, decreasing (EDM Eq. 5)."""
    if n == 1:
        return np.array([sigma_max], dtype=np.float64)
    ramp = np.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def nearest_timesteps(sigmas, target) -> list[int]:
    """Distinct timesteps, decreasing, nearest in log sigma to the decreasing `target` noise levels.

    sigmas is the increasing (T,) table of the process. Collisions (several targets on one timestep, which
    happens where the table is coarse) are resolved by moving to neighbours, keeping the ends where they are.
    """
    log_sig = np.log(np.asarray(sigmas, dtype=np.float64))
    T, n = len(log_sig), len(target)
    ts = [int(np.abs(log_sig - np.log(s)).argmin()) for s in target]
    for i in range(1, n):  # strictly decreasing, top down
        ts[i] = min(ts[i], ts[i - 1] - 1)
    for i in range(n - 1, -1, -1):  # and no lower than the room left, bottom up
        ts[i] = max(ts[i], 0 if i == n - 1 else ts[i + 1] + 1)
    if ts[0] > T - 1:
        raise ValueError(f"cannot place {n} distinct steps in 0..{T - 1}")
    return ts


def select_steps(process, n: int, spacing: Spacing = "leading", rho: float = 7.0, sigma_jump: float = 5.0) -> list[int]:
    """`timesteps` for a NoiseProcess: passes its sigma table, so every spacing (karras, logsnr too) works."""
    import torch  # local: steps.py stays numpy-only for callers that only need the index spacings

    sigmas = process.sigma(torch.arange(process.T)).numpy()
    return timesteps(process.T, n, spacing, sigmas=sigmas, rho=rho, sigma_jump=sigma_jump)


def plan_steps(process, n: int, spacing: str) -> list[int]:
    """`select_steps` for user input: a bad step count or spacing is a one-line UserError naming the valid values."""
    from difflab.errors import UserError

    if spacing not in SPACINGS:
        raise UserError(f"unknown spacing '{spacing}'; valid: {', '.join(SPACINGS)}")
    if not 1 <= n <= process.T:
        raise UserError(f"the number of sampling steps must be between 1 and T={process.T}; got {n}")
    return select_steps(process, n, spacing)


def parse_timesteps(spec, T: int) -> list[int]:
    """User-given timesteps: a sequence, 'a,b,c', or a .json file holding a list or {"timesteps": [...]} (what
    `difflab sample --spacing searched` prints); checked to be distinct, decreasing and in 0..T-1 (UserError otherwise)."""
    import json
    from pathlib import Path

    from difflab.errors import UserError

    if isinstance(spec, (str, Path)):
        text = str(spec).strip()
        if text.endswith(".json"):
            try:
                data = json.loads(Path(text).expanduser().read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise UserError(f"cannot read timesteps from {text}: {e}; give a JSON list or {{\"timesteps\": [...]}}") from None
            spec = data.get("timesteps") if isinstance(data, dict) else data
            if not isinstance(spec, list):
                raise UserError(f"{text} holds no timesteps list; expected a JSON list or {{\"timesteps\": [...]}}")
        else:
            try:
                spec = [int(v) for v in text.split(",") if v.strip()]
            except ValueError:
                raise UserError(f"--timesteps must be comma-separated integers such as 999,500,0 or a .json file; got {text!r}") from None
    steps = list(spec)
    if not steps or any(isinstance(t, bool) or not isinstance(t, (int, np.integer)) for t in steps):
        raise UserError(f"timesteps must be a non-empty list of integers; got {steps!r}")
    steps = [int(t) for t in steps]
    if any(not 0 <= t < T for t in steps):
        raise UserError(f"timesteps must lie in 0..{T - 1} (T={T}); got {steps}")
    if any(a <= b for a, b in zip(steps, steps[1:])):
        raise UserError(f"timesteps must be distinct and decreasing (the order a sampler visits them); got {steps}")
    return steps
