"""RePaint (Lugmayr et al. 2022): inpainting with any unconditional Denoiser, no retraining.

Algorithm 1 of the paper, on any decreasing grid of timesteps `steps` (a respaced chain, as RePaint's 250 steps):
at every reverse step t -> s the KNOWN region is a fresh draw of the forward process q(x_s | x_0) from the given
image, the UNKNOWN region is the model's reverse step p(x_s | x_t), and the two are pasted together with the mask:

    x_s = m * (a_s x_0 + std_s eps)  +  (1 - m) * (mu_theta(x_t, t) + Sigma^{1/2} z)            (Alg. 1, lines 5-8)

Because the two halves are sampled independently, the unknown region only sees the known one through the model's
prediction at the next step. Resampling ("jumps") lets them harmonise: after every `jump_length` reverse steps the
chain is sent `jump_length` steps back up with the forward transition q(x_t | x_s) = N(a_t/a_s x_s, a_t^2 (sigma_t^2 -
sigma_s^2) I) (Alg. 1, line 10) and descends again, `jump_n_sample - 1` extra times (RePaint's `get_schedule_jump`;
the paper uses jump_length = jump_n_sample = 10). jump_n_sample = 1 is plain replacement without resampling.

At the last step (s = -1, clean data) the known region is the input itself, so the output equals the input there
exactly. Masks follow RePaint's convention: 1 = known, 0 = to fill (difflab.restoration.masks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from difflab.denoiser import Denoiser, bcast
from difflab.errors import UserError


def jump_schedule(n: int, jump_length: int = 10, jump_n_sample: int = 10) -> list[int]:
    """Positions visited on a grid of n noise levels (n-1 = noisiest, 0 = least noisy, -1 = clean data).

    RePaint's `get_schedule_jump`: descend one position at a time; on reaching a position j (j = 0, L, 2L, ... below
    n - L) that still has jumps left, climb L positions back up and descend again, jump_n_sample - 1 times per j.
    Consecutive entries differ by exactly one: a decrease is a reverse step, an increase a forward (re-noising) step.
    """
    if n < 1:
        raise UserError(f"inpainting needs at least 1 step; got {n}")
    if jump_length < 1 or jump_n_sample < 1:
        raise UserError(f"--jump-length and --jump-n-sample must be at least 1; got {jump_length} and {jump_n_sample}")
    jumps = {j: jump_n_sample - 1 for j in range(0, n - jump_length, jump_length)}
    t = n
    out = []
    while t >= 1:
        t -= 1
        out.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                out.append(t)
    out.append(-1)
    return out


def repaint_nfe(n: int, jump_length: int = 10, jump_n_sample: int = 10) -> int:
    """Denoiser evaluations of `repaint` on n steps: the number of reverse (descending) moves of the schedule."""
    sched = jump_schedule(n, jump_length, jump_n_sample)
    return sum(1 for a, b in zip(sched, sched[1:]) if b < a)


@torch.no_grad()
def repaint(
    denoiser: Denoiser,
    x_known: Tensor,
    mask: Tensor,
    steps: Sequence[int],
    *,
    jump_length: int = 10,
    jump_n_sample: int = 10,
    y: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
) -> Tensor:
    """Fill the pixels where mask == 0 in x_known (B, ...) with the denoiser's prior, RePaint Algorithm 1.

    mask: broadcastable to x_known, 1 = known, 0 = unknown (values of x_known there are ignored). steps: the decreasing
    timesteps of the chain (e.g. `timesteps(T, 250, "linspace")`). All noise comes from `generator`, in schedule order:
    x_T first, then per reverse step the known-region eps and (unless s = -1) the reverse z, per forward step its z.
    callback gets {"i", "t", "s", "x", "x0", "direction"} after each move (x0 is None on forward moves).
    """
    p = denoiser.process
    asc = sorted(int(t) for t in steps)
    if len(set(asc)) != len(asc) or not asc or asc[0] < 0 or asc[-1] >= p.T:
        raise UserError(f"inpainting steps must be distinct timesteps in 0..{p.T - 1}")
    x0 = x_known
    m = mask.to(device=x0.device, dtype=x0.dtype)
    b = x0.shape[0]

    def randn() -> Tensor:
        return torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)

    def level(pos: int) -> Tensor:
        return torch.full((b,), asc[pos] if pos >= 0 else -1, dtype=torch.long)

    sched = jump_schedule(len(asc), jump_length, jump_n_sample)
    top = level(sched[0])
    # x_T from the noisiest marginal of unit-variance data, N(0, a_T^2 (1 + sigma_T^2) I) (= N(0, I) for VP).
    x = bcast(p.a(top) * (1 + p.sigma(top) ** 2).sqrt(), x0) * randn()
    for i, (cur, nxt) in enumerate(zip(sched, sched[1:])):
        t, s = level(cur), level(nxt)  # the move goes from level t to level s
        if nxt < cur:  # reverse step t -> s (Alg. 1, lines 4-8)
            known = p.q_sample(x0, s, randn()) if nxt >= 0 else x0
            pred = denoiser(x, t, y, s=s)
            unknown = pred.mean
            if nxt >= 0:
                unknown = unknown + (0.5 * pred.log_var).exp() * randn()
            x = m * known + (1 - m) * unknown
            x0_hat = pred.x0
        else:  # forward jump t -> s > t: x_s ~ q(x_s | x_t) = N(a_s / a_t x_t, a_s^2 (sigma_s^2 - sigma_t^2) I) (line 10)
            x = bcast(p.a(s) / p.a(t), x) * x + bcast(p.transition_var(s, t).sqrt(), x) * randn()
            x0_hat = None
        if callback is not None:
            callback({"i": i, "t": int(t[0]), "s": int(s[0]), "x": x, "x0": x0_hat, "direction": "reverse" if nxt < cur else "forward"})
    return x
