"""The consistency function f(x_t, t) of Song et al. 2023 (Sec. 3, Appendix C) as a Denoiser: Prediction.x0 = f.

f_theta(x, t) = c_skip(sigma) x_hat + c_out(sigma) F_theta(x, t) in the coordinates x_hat = x_t / a_t = x_0 + sigma eps,
with EDM's sigma_data and the boundary shift of the paper,
    c_skip(sigma) = sigma_data^2 / ((sigma - sigma_min)^2 + sigma_data^2),
    c_out(sigma)  = sigma_data (sigma - sigma_min) / sqrt(sigma_data^2 + sigma^2),
so that f(x, sigma_min) = x_hat exactly (the boundary condition f(x, eps) = x). F_theta is the network in EDM's output
parameterisation, F = (D - c_skip^EDM x_hat) / c_out^EDM with D the x_0 its ModelDenoiser predicts: a network
initialised from a diffusion teacher then starts as the teacher's denoiser, as the paper initialises from EDM.
"""

from __future__ import annotations

from torch import Tensor

from difflab.denoiser.base import Prediction, as_timesteps, bcast, complete_prediction
from difflab.denoiser.model import ModelDenoiser

SIGMA_DATA = 0.5  # EDM's sigma_data (Karras et al. 2022), used by Song et al. 2023 for images in [-1, 1]


class ConsistencyFunction:
    """A Denoiser whose x0 is the consistency function f_theta(x_t, t); `inner` is the network's ModelDenoiser (no clipping).

    sigma_min is the noise-to-signal ratio of the smallest timestep the model is trained on (Song et al.'s epsilon).
    clip_x0 clips f to [-1, 1] when sampling (training calls `f` unclipped).
    """

    def __init__(self, inner: ModelDenoiser, sigma_min: float, clip_x0: bool = False):
        self.inner, self.process, self.sigma_min, self.clip_x0 = inner, inner.process, float(sigma_min), clip_x0

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(c_skip, c_out) of the consistency model and (c_skip, c_out) of EDM at sigma (float64, (B,))."""
        sd, shifted = SIGMA_DATA, sigma - self.sigma_min
        c_skip = sd**2 / (shifted**2 + sd**2)
        c_out = sd * shifted / (sd**2 + sigma**2).sqrt()
        c_skip_edm = sd**2 / (sigma**2 + sd**2)
        c_out_edm = sd * sigma / (sd**2 + sigma**2).sqrt()
        return c_skip, c_out, c_skip_edm, c_out_edm

    def f(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """f_theta(x_t, t), shaped like x; differentiable in the network's parameters."""
        t = as_timesteps(t, x.shape[0])
        p = self.process
        x_hat = x / bcast(p.a(t), x)
        out, _ = self.inner.raw(x, t, y)
        D, _ = self.inner.x0_eps(x, t, out)
        c_skip, c_out, c_skip_edm, c_out_edm = (bcast(c, x) for c in self.coefficients(p.sigma(t)))
        F = (D - c_skip_edm * x_hat) / c_out_edm
        return c_skip * x_hat + c_out * F

    def __call__(self, x: Tensor, t: Tensor | int, y: Tensor | None = None, s: Tensor | int | None = None) -> Prediction:
        t = as_timesteps(t, x.shape[0])
        s = t - 1 if s is None else as_timesteps(s, x.shape[0])
        p = self.process
        x0 = self.f(x, t, y)
        if self.clip_x0:
            x0 = x0.clamp(-1, 1)
        return complete_prediction(p, x, t, s, x0, p.eps_from_x0(x, t, x0))


def consistency_function(inner: ModelDenoiser, sigma_min: float, clip_x0: bool = False) -> ConsistencyFunction:
    """The consistency function over `inner`'s network, with x_0 clipping off inside (f must stay differentiable)."""
    unclipped = ModelDenoiser(inner.net, inner.process, inner.cfg, clip_x0=False)
    return ConsistencyFunction(unclipped, sigma_min, clip_x0)


__all__ = ["SIGMA_DATA", "ConsistencyFunction", "consistency_function"]
