"""Consistency distillation (Song et al. 2023, Algorithm 2): f_theta(x_{t_{n+1}}, t_{n+1}) is pulled towards the EMA
target f_theta^-(x^_{t_n}, t_n), where x^_{t_n} is the teacher's one-step ODE solution (a DDIM step, the exponential
integrator of the probability-flow ODE) from x_{t_{n+1}} back to the adjacent discretisation point t_n."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from difflab.process import build_process
from difflab.runs.student.config import StudentConfig
from difflab.runs.student.denoisers import consistency_grid, consistency_student
from difflab.runs.student.teaching import Teaching
from difflab.samplers import ddim_step, prior_sample
from difflab.samplers.consistency import consistency


class ConsistencyTask(Teaching):
    """d(f_theta(x_{t_{n+1}}), f_theta^-(x^_{t_n})) with d the squared l2 distance and lambda(t_n) = 1; the target network
    theta^- <- mu theta^- + (1 - mu) theta after every optimiser step (it is checkpointed, so resume is exact)."""

    def __init__(self, cfg: StudentConfig, model: nn.Module, device: torch.device):
        self.grid = torch.tensor(consistency_grid(cfg))  # increasing t_1 < ... < t_N
        self.process = build_process(cfg.process)
        super().__init__(cfg, model, device, n_choices=len(self.grid) - 1)
        self.target = copy.deepcopy(model).to(device).requires_grad_(False)  # theta^- starts at theta (= the teacher)
        self._update_due = False

    def draw(self, generator: torch.Generator, n: int, x_shape: tuple[int, ...]) -> dict[str, Tensor]:
        self._update_due = True  # one draw per optimiser step: the first loss call of the step updates theta^-
        return super().draw(generator, n, x_shape)

    @torch.no_grad()
    def _update_target(self, model: nn.Module) -> None:
        """theta^- <- stopgrad(mu theta^- + (1 - mu) theta) with theta after the previous optimiser step (Algorithm 2)."""
        mu = self.cfg.distill.ema_mu
        for p_minus, p in zip(self.target.parameters(), getattr(model, "module", model).parameters()):
            p_minus.lerp_(p.detach(), 1.0 - mu)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None, draws: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        if self._update_due:
            self._update_target(model)
            self._update_due = False
        p, n = self.process, draws["i"].cpu()
        t_next, t_n = self.grid[n + 1], self.grid[n]
        x_next = p.q_sample(x, t_next, draws["eps"])
        with torch.no_grad():
            a = self.teacher(x_next, t_next, y, s=t_n)
            x_hat = ddim_step(p, a.x0, a.eps, t_next, t_n, 0.0, None)  # Phi(x_{t_{n+1}}, t_{n+1}; phi), one ODE step
            target = consistency_student(self.cfg, self.target, clip_x0=False).f(x_hat, t_n, y)
        online = consistency_student(self.cfg, model, clip_x0=False).f(x_next, t_next, y)
        return ((online - target) ** 2).flatten(1).mean(1), {}

    @torch.no_grad()
    def sample_grid(self, model: nn.Module, generator: torch.Generator) -> Tensor:
        model.eval()
        m, k, steps = self.cfg.model, self.cfg.sample.grid_size, self.cfg.default_steps
        x_T = prior_sample(self.process, (k, m.in_channels, m.image_size, m.image_size), generator, dtype=torch.float32).to(self.device)
        return consistency(consistency_student(self.cfg, model), x_T, self.cfg.grid(steps), gamma=self.cfg.sample.gamma,
                           y=self.grid_labels(k), generator=generator).cpu()

    def state_dict(self) -> dict[str, Tensor]:
        return {f"target.{k}": v for k, v in self.target.state_dict().items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.target.load_state_dict({k.removeprefix("target."): v for k, v in state.items()})
