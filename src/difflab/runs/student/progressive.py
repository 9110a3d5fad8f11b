"""Progressive distillation (Salimans & Ho 2022, Algorithm 2): one round teaches a student to take in one DDIM step what
the teacher takes in two. The run of round k trains on the grid of n = teacher_steps / 2^k steps."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from difflab.denoiser import ModelDenoiser, bcast
from difflab.process import build_process
from difflab.runs.student.config import StudentConfig
from difflab.runs.student.denoisers import JumpDenoiser, student_denoiser_config
from difflab.runs.student.teaching import Teaching
from difflab.samplers import ddim, ddim_step, prior_sample


def ddim_target(process, z_t: Tensor, x_s: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """x~ = (x_s - (sigma_s / sigma_t) z_t) / (alpha_s - (sigma_s / sigma_t) alpha_t): the x_0 whose single DDIM step t -> s
    from z_t lands on the teacher's two-step x_s (Algorithm 2; sigma, alpha = the std and the scale of x_t). s = -1: x_s."""
    ratio = bcast(process.std(s) / process.std(t), z_t)
    return (x_s - ratio * z_t) / (bcast(process.a(s), z_t) - ratio * bcast(process.a(t), z_t))


def snr_weight(process, t: Tensor, kind: str) -> Tensor:
    """The weight of the x_0 error (Salimans & Ho 2022, Sec. 4): max(SNR, 1) ('truncated SNR') or SNR + 1; (B,) float64."""
    snr = process.snr(t)
    return snr.clamp(min=1.0) if kind == "truncated_snr" else snr + 1.0


class ProgressiveTask(Teaching):
    """One round: x_t from the data, two DDIM steps of the teacher t -> t' -> s, and the student's single step t -> s
    regressed on the x_0 that would land on the same x_s, weighted by max(SNR_t, 1)."""

    def __init__(self, cfg: StudentConfig, model: nn.Module, device: torch.device):
        n_teacher, self.n = cfg.distill.round_steps(cfg.distill.round)
        self.teacher_grid = torch.tensor(cfg.grid(n_teacher) + [-1])  # decreasing; the student's grid is every other point
        self.process = build_process(cfg.process)
        super().__init__(cfg, model, device, n_choices=self.n)
        self.student_cfg = student_denoiser_config(cfg)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None, draws: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        p, i = self.process, draws["i"].cpu()
        t, t_mid, s = self.teacher_grid[2 * i], self.teacher_grid[2 * i + 1], self.teacher_grid[2 * i + 2]
        z_t = p.q_sample(x, t, draws["eps"])
        with torch.no_grad():
            a = self.teacher(z_t, t, y, s=t_mid)
            x_mid = ddim_step(p, a.x0, a.eps, t, t_mid, 0.0, None)
            b = self.teacher(x_mid, t_mid, y, s=s)
            x_s = ddim_step(p, b.x0, b.eps, t_mid, s, 0.0, None)
            target = ddim_target(p, z_t, x_s, t, s)
        student = ModelDenoiser(model, p, self.student_cfg, clip_x0=False)
        x0_hat, _ = student.x0_eps(z_t, t, student.raw(z_t, t, y)[0])
        w = bcast(snr_weight(p, t, self.cfg.distill.weighting), x)
        return (w * (target - x0_hat) ** 2).flatten(1).mean(1), {}

    @torch.no_grad()
    def sample_grid(self, model: nn.Module, generator: torch.Generator) -> Tensor:
        model.eval()
        den = JumpDenoiser({self.n: ModelDenoiser(model, self.process, self.student_cfg)}, self.cfg.grid)
        m, k = self.cfg.model, self.cfg.sample.grid_size
        x_T = prior_sample(self.process, (k, m.in_channels, m.image_size, m.image_size), generator, dtype=torch.float32).to(self.device)
        return ddim(den, x_T, self.cfg.grid(self.n), y=self.grid_labels(k), generator=generator).cpu()

    def state_dict(self) -> dict[str, Tensor]:
        return {}  # the teacher is named by its hash; the rest is a function of (seed, step)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        pass
