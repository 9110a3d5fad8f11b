"""Classifier guidance (Dhariwal & Nichol 2021, Sec. 4; Algorithms 1 and 2) as a Denoiser that wraps a Denoiser.

With a classifier p_phi(y | x_t) trained on noisy images and a gradient scale s, g = s * grad_x log p_phi(y | x_t):

- Algorithm 1 (ancestral): x_{t-1} ~ N(mu + Sigma g, Sigma): the reverse mean is shifted by Sigma g.
- Algorithm 2 (DDIM / any eps- or score-based step): eps_hat = eps - sqrt(1 - alpha_bar_t) g, i.e. the score
  becomes grad log p_t(x) + g = grad log [p_t(x) p_phi(y|x)^s] (up to a constant); x0 is recomputed from eps_hat.

A Prediction carries both views, so one wrapper returns the Algorithm-1 `mean` (log_var unchanged) and the
Algorithm-2 `eps`, `x0` and `score`. Which one a sampler uses depends on the field it reads (guidance/support.py):
ddpm and pc's ancestral predictor read `mean`; every other sampler reads x0 / eps / score.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.denoiser import Denoiser, Prediction, as_timesteps, bcast
from difflab.errors import UserError
from difflab.process import NoiseProcess


class NoisyClassifier(Protocol):
    """Logits of p_phi(y | x_t) at integer timesteps t (B,) -> (B, K), differentiable in x."""

    num_classes: int

    def __call__(self, x: Tensor, t: Tensor) -> Tensor: ...


class NetClassifier:
    """A noise-aware classifier network + the process it was trained on, as a NoisyClassifier."""

    def __init__(self, net: nn.Module, process: NoiseProcess, num_classes: int):
        self.net, self.process, self.num_classes = net, process, num_classes

    def __call__(self, x: Tensor, t: Tensor | int) -> Tensor:
        t = as_timesteps(t, x.shape[0])
        return self.net(x, self.process.model_time(t).to(x.device))


def log_prob_and_grad(classifier: NoisyClassifier, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(log p_phi(y | x_t) (B,), grad_x log p_phi(y | x_t) shaped like x), by autograd (grad on even inside no_grad)."""
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        log_p = F.log_softmax(classifier(x_in, t), dim=-1)  # (B, K)
        selected = log_p.gather(1, y.to(log_p.device).long().reshape(-1, 1))[:, 0]
        (grad,) = torch.autograd.grad(selected.sum(), x_in)  # each example's log p depends on its own x only
    return selected.detach(), grad.to(x.dtype)


def guide_prediction(process: NoiseProcess, x: Tensor, t: Tensor, pred: Prediction, g: Tensor) -> Prediction:
    """Shift a Prediction by g = s * grad log p(y | x_t): mean + Sigma g (Alg. 1), eps - std_t g (Alg. 2), x0 and score from eps."""
    std = bcast(process.std(t), x)  # sqrt(1 - alpha_bar_t) for VP, sigma_t for VE; (B, 1, ..)
    eps = pred.eps - std * g
    x0 = process.x0_from_eps(x, t, eps)
    score = pred.score + g  # = -eps / std
    mean = pred.mean + pred.log_var.exp() * g
    return Prediction(x0=x0, eps=eps, score=score, mean=mean, log_var=pred.log_var)


def check_same_process(model: NoiseProcess, classifier: NoiseProcess) -> None:
    """The classifier must have seen the noise levels the sampler visits: same T and the same a_t, sigma_t tables."""
    if model.T != classifier.T or model.kind != classifier.kind:
        raise UserError(f"the classifier was trained on a {classifier.kind} process with T={classifier.T}, the diffusion model on "
                        f"{model.kind} with T={model.T}: train the classifier with the model's process settings")
    t = torch.arange(model.T)
    same = torch.allclose(model.a(t), classifier.a(t), rtol=1e-6) and torch.allclose(model.sigma(t), classifier.sigma(t), rtol=1e-6)
    same = same and torch.equal(model.timestep_map, classifier.timestep_map)
    if not same:
        raise UserError("the classifier was trained with a different noise schedule than the diffusion model: "
                        "train it with the model's process.* settings")


class ClassifierGuidance:
    """A Denoiser: `denoiser` steered towards class y by `classifier` with gradient scale `scale` (s of Alg. 1-2).

    `condition_denoiser`: pass y on to the wrapped denoiser (a class-conditional model, ADM-G's usual setting)
    or call it with y=None (an unconditional model, or the null label of a model trained with label dropout).
    y is required: it names the class to guide towards. scale = 0 returns the wrapped prediction unchanged.
    """

    def __init__(self, denoiser: Denoiser, classifier: NoisyClassifier, scale: float, *, condition_denoiser: bool = False):
        if scale < 0:
            raise UserError(f"the classifier guidance scale must be >= 0; got {scale}")
        if getattr(classifier, "process", None) is not None:
            check_same_process(denoiser.process, classifier.process)
        self.denoiser, self.classifier, self.scale = denoiser, classifier, float(scale)
        self.condition_denoiser = condition_denoiser
        self.process = denoiser.process

    def __call__(self, x: Tensor, t: Tensor | int, y: Tensor | None = None, s: Tensor | int | None = None) -> Prediction:
        if y is None:
            raise ValueError("classifier guidance needs the target labels y")
        t = as_timesteps(t, x.shape[0])
        s = t - 1 if s is None else as_timesteps(s, x.shape[0])
        pred = self.denoiser(x, t, y if self.condition_denoiser else None, s=s)
        if self.scale == 0:
            return pred
        _, grad = log_prob_and_grad(self.classifier, x, t, y)
        return guide_prediction(self.process, x, t, pred, self.scale * grad)
