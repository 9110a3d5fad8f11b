"""What a loaded student is: its Denoiser. A progressive student holds one network per step count it was distilled for
(each round's student is trained only for the jumps t -> s of its own grid); a consistency student is one f(x_t, t)."""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from difflab.denoiser import ModelDenoiser, Prediction, as_timesteps, complete_prediction
from difflab.denoiser.consistency import ConsistencyFunction, consistency_function
from difflab.errors import UserError
from difflab.process import build_process
from difflab.runs.student.config import StudentConfig


def student_denoiser_config(cfg: StudentConfig):
    """The teacher's DenoiserConfig with the progressive student's parameterisation (v or x_0)."""
    import dataclasses

    if cfg.distill.method != "progressive":
        return cfg.denoiser
    return dataclasses.replace(cfg.denoiser, parameterization=cfg.distill.parameterization)


class JumpDenoiser:
    """A Denoiser over the progressive students {n: network}: each example's step t -> s names the student of the grid it
    lies on (the jump T/n is different for every n), so one sampler call at n steps only ever asks student n."""

    def __init__(self, students: dict[int, ModelDenoiser], grid):
        self.students, self.process = students, next(iter(students.values())).process
        self.jumps: dict[tuple[int, int], int] = {}
        for n in students:
            g = list(grid(n)) + [-1]
            self.jumps.update({(t, s): n for t, s in zip(g, g[1:])})

    def __call__(self, x: Tensor, t: Tensor | int, y: Tensor | None = None, s: Tensor | int | None = None) -> Prediction:
        b = x.shape[0]
        t = as_timesteps(t, b)
        s = t - 1 if s is None else as_timesteps(s, b)
        which = torch.tensor([self.jumps.get((int(ti), int(si)), 0) for ti, si in zip(t, s)])
        if bool((which == 0).any()):
            i = int((which == 0).nonzero()[0])
            raise UserError(f"the step {int(t[i])} -> {int(s[i])} is on none of the grids this progressive student was distilled for "
                            f"(--steps {', '.join(map(str, sorted(self.students)))})")
        x0, eps, log_var = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
        for n in which.unique().tolist():
            m = (which == n).to(x.device)
            pred = self.students[n](x[m], t[m.cpu()], None if y is None else y[m], s=s[m.cpu()])
            x0[m], eps[m], log_var[m] = pred.x0, pred.eps, pred.log_var
        return complete_prediction(self.process, x, t, s, x0, eps, log_var)


def consistency_grid(cfg: StudentConfig) -> list[int]:
    """The increasing timesteps t_1 < ... < t_N of consistency distillation: EDM's rho = 7 grid in sigma (Song et al. 2023,
    Sec. 5) with N = distill.teacher_steps, plus every sampling grid, so f is trained exactly where it is evaluated."""
    return list(_grid(cfg.process, cfg.distill.teacher_steps, cfg.distill.student_steps))


@functools.lru_cache(maxsize=16)
def _grid(process_cfg, n: int, sample_steps: tuple[int, ...]) -> tuple[int, ...]:
    from difflab.samplers import select_steps, timesteps

    process = build_process(process_cfg)
    points = set(select_steps(process, n, "karras"))
    for k in sample_steps:
        points.update(timesteps(process.T, k, "trailing"))
    return tuple(sorted(points))


def consistency_student(cfg: StudentConfig, net: nn.Module, clip_x0: bool | None = None) -> ConsistencyFunction:
    """f_theta over `net`, with sigma_min at the smallest timestep of the training grid."""
    process = build_process(cfg.process)
    sigma_min = float(process.sigma(torch.tensor([consistency_grid(cfg)[0]]))[0])
    clip = cfg.denoiser.clip_x0 if clip_x0 is None else clip_x0
    return consistency_function(ModelDenoiser(net, process, cfg.denoiser), sigma_min, clip)


def student_denoiser(cfg: StudentConfig, net: nn.Module):
    """The Denoiser of a loaded student (runs/student/kind.py): a JumpDenoiser or a ConsistencyFunction."""
    if cfg.distill.method == "consistency":
        return consistency_student(cfg, net)
    process, dcfg = build_process(cfg.process), student_denoiser_config(cfg)
    nets = {int(k): m for k, m in net.items()} if isinstance(net, nn.ModuleDict) else {cfg.served_steps[0]: net}
    return JumpDenoiser({n: ModelDenoiser(m, process, dcfg) for n, m in nets.items()}, cfg.grid)
