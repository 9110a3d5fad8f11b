"""Classifier-free guidance (Ho & Salimans 2022, Eq. 6 / Algorithm 2) as a Denoiser that wraps a Denoiser.

eps_tilde(x_t, y) = (1 + w) eps(x_t, y) - w eps(x_t, null), where `null` is the label the model was trained
with under label dropout (train.label_dropout; index model.num_classes of the U-Net's label table). w = 0 is
the conditional model; w > 0 pushes along grad log p(y | x_t) of the model's implicit classifier:
score_tilde = score(x|y) + w (score(x|y) - score(x)). x0, score and the reverse mean follow from eps_tilde,
so every sampler sees the guided model through the field it reads.
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.denoiser import Denoiser, Prediction, as_timesteps, complete_prediction
from difflab.errors import UserError


class ClassifierFreeGuidance:
    """A Denoiser: the guided combination of `denoiser`'s conditional and unconditional predictions.

    null_label: the label value that selects the unconditional prediction. With an int the conditional and
    unconditional halves run as ONE forward pass over a batch of 2B (x repeated, labels [y; null]); with None
    the wrapped denoiser is called twice, the second time with y=None (e.g. the Gaussian-mixture oracle).
    clip_x0: clip the guided x0 to [-1, 1] and recompute eps from it (GLIDE clips the guided prediction when
    sampling; set it from the run's denoiser.clip_x0). The reverse variance is the conditional half's.
    """

    def __init__(self, denoiser: Denoiser, scale: float, null_label: int | None, *, clip_x0: bool = False):
        if scale < 0:
            raise UserError(f"the classifier-free guidance scale w must be >= 0; got {scale}")
        self.denoiser, self.scale, self.null_label, self.clip_x0 = denoiser, float(scale), null_label, clip_x0
        self.process = denoiser.process

    def both(self, x: Tensor, t: Tensor, y: Tensor, s: Tensor) -> tuple[Prediction, Prediction]:
        """(conditional, unconditional) predictions at (x_t, t) for the step t -> s."""
        b = x.shape[0]
        if self.null_label is None:
            return self.denoiser(x, t, y, s=s), self.denoiser(x, t, None, s=s)
        y = y.to(x.device).long()
        labels = torch.cat([y, torch.full_like(y, self.null_label)])  # (2B,): [y; null]
        pred = self.denoiser(torch.cat([x, x]), torch.cat([t, t]), labels, s=torch.cat([s, s]))
        cond = Prediction(*(v[:b] for v in pred))
        uncond = Prediction(*(v[b:] for v in pred))
        return cond, uncond

    def __call__(self, x: Tensor, t: Tensor | int, y: Tensor | None = None, s: Tensor | int | None = None) -> Prediction:
        if y is None:
            raise ValueError("classifier-free guidance needs the labels y")
        t = as_timesteps(t, x.shape[0])
        s = t - 1 if s is None else as_timesteps(s, x.shape[0])
        cond, uncond = self.both(x, t, y, s)
        w = self.scale
        eps = (1 + w) * cond.eps - w * uncond.eps  # Ho & Salimans 2022, Eq. 6
        p = self.process
        x0 = p.x0_from_eps(x, t, eps)
        if self.clip_x0:
            x0 = x0.clamp(-1, 1)
            eps = p.eps_from_x0(x, t, x0)
        return complete_prediction(p, x, t, s, x0, eps, cond.log_var)
