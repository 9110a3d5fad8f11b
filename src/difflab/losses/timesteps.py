"""Timestep distributions for training: uniform, and improved DDPM's loss-second-moment importance sampler.

A sampler draws t with probability p_t and returns the importance weight 1 / (T p_t) of each draw, so
that E_t[w_t L_t] = (1/T) sum_t L_t whatever p is (Nichol & Dhariwal 2021, Sec. 3.3, Eq. 18).
All randomness comes from the generator passed to `sample`; the history is plain tensors for checkpoints.
"""

from __future__ import annotations

import torch
from torch import Tensor


class UniformTimesteps:
    """t ~ Uniform{0, ..., T-1} with unit weights (Ho et al. 2020, Algorithm 1)."""

    def __init__(self, T: int):
        self.T = T

    def probs(self) -> Tensor:
        """p_t, (T,) float64."""
        return torch.full((self.T,), 1.0 / self.T, dtype=torch.float64)

    def sample(self, batch: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(t, weights): (B,) long and (B,) float64 ones, on the CPU."""
        t = torch.randint(0, self.T, (batch,), generator=generator)
        return t, torch.ones(batch, dtype=torch.float64)

    def update(self, t: Tensor, losses: Tensor) -> None:
        """Uniform sampling keeps no history."""

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if state:
            raise KeyError(f"uniform timestep sampling has no state; got keys {sorted(state)}")


class LossSecondMomentTimesteps:
    """Importance sampling p_t ∝ sqrt(E[L_t^2]) over the last `history` losses of each t (improved DDPM Eq. 18).

    Until every t has `history` recorded losses the draw is uniform; then p is mixed with
    `uniform_prob` of the uniform distribution so that no step is starved. Draws use torch.multinomial
    in both phases, so a resumed run consumes the generator exactly as the original one did.
    """

    def __init__(self, T: int, history: int = 10, uniform_prob: float = 0.001):
        self.T = T
        self.history = history
        self.uniform_prob = uniform_prob
        self.loss_history = torch.zeros(T, history, dtype=torch.float64)  # (T, H), oldest first
        self.loss_counts = torch.zeros(T, dtype=torch.long)  # (T,), how many of the H slots are filled

    def warmed_up(self) -> bool:
        return bool((self.loss_counts == self.history).all())

    def probs(self) -> Tensor:
        """p_t, (T,) float64: uniform before warm-up, else (1 - u) sqrt(mean L_t^2) / Z + u / T."""
        if not self.warmed_up():
            return torch.full((self.T,), 1.0 / self.T, dtype=torch.float64)
        w = self.loss_history.pow(2).mean(dim=1).sqrt()
        total = w.sum()
        if not bool(total > 0) or not bool(torch.isfinite(total)):  # all-zero or broken history: stay uniform
            return torch.full((self.T,), 1.0 / self.T, dtype=torch.float64)
        return (1 - self.uniform_prob) * w / total + self.uniform_prob / self.T

    def sample(self, batch: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(t, weights): (B,) long drawn from p and (B,) float64 importance weights 1 / (T p_t)."""
        p = self.probs()
        t = torch.multinomial(p, batch, replacement=True, generator=generator)
        return t, 1.0 / (self.T * p[t])

    def update(self, t: Tensor, losses: Tensor) -> None:
        """Record losses[i] for timestep t[i], in order; a full row drops its oldest value.

        Every DDP rank must call this with the same all-gathered (t, losses) so the samplers stay identical.
        """
        for ti, li in zip(torch.as_tensor(t).reshape(-1).tolist(), torch.as_tensor(losses).reshape(-1).tolist()):
            n = int(self.loss_counts[ti])
            if n == self.history:
                self.loss_history[ti, :-1] = self.loss_history[ti, 1:].clone()
                self.loss_history[ti, -1] = li
            else:
                self.loss_history[ti, n] = li
                self.loss_counts[ti] = n + 1

    def state_dict(self) -> dict[str, Tensor]:
        """The history as plain CPU tensors (safetensors-compatible)."""
        return {"loss_history": self.loss_history.clone(), "loss_counts": self.loss_counts.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        hist, counts = state["loss_history"], state["loss_counts"]
        if tuple(hist.shape) != (self.T, self.history) or tuple(counts.shape) != (self.T,):
            raise ValueError(
                f"loss-aware sampler state has shapes {tuple(hist.shape)}, {tuple(counts.shape)}; "
                f"expected ({self.T}, {self.history}) and ({self.T},)"
            )
        self.loss_history = hist.to(torch.float64).clone()
        self.loss_counts = counts.to(torch.long).clone()
