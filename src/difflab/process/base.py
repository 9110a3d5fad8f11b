"""A noise process in the form x_t = a_t (x_0 + sigma_t eps): closed forms shared by the VP and VE processes.

VP (DDPM): a_t = sqrt(alpha_bar_t), sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t).
VE (NCSN): a_t = 1, sigma_t = the noise level.
Timesteps are integer indices 0..T-1 (0 = least noise). Index -1 stands for clean data (a = 1, sigma = 0),
so that the last reverse step t -> s = -1 lands on x_0. Every table is float64; results are cast to the
dtype of the tensor they act on.
"""

from __future__ import annotations

import torch
from torch import Tensor


def bcast(v: Tensor, like: Tensor) -> Tensor:
    """(B,) float64 -> (B, 1, ..., 1) in like's dtype/device, for per-example coefficients."""
    return v.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


class NoiseProcess:
    """Closed forms of a Gaussian forward process given the tables a_t and sigma_t (float64, length T)."""

    kind: str = "base"

    def __init__(self, a: Tensor, sigma: Tensor, timestep_map: Tensor | None = None):
        if a.dtype != torch.float64 or sigma.dtype != torch.float64:
            raise TypeError("process tables must be float64")
        self.T = int(a.shape[0])
        # Padded tables: entry 0 is the clean-data index -1.
        self._a = torch.cat([torch.ones(1, dtype=torch.float64), a])
        self._sigma = torch.cat([torch.zeros(1, dtype=torch.float64), sigma])
        # The time value the network sees for index t (differs from t after respacing, improved DDPM Sec. 4).
        self.timestep_map = torch.arange(self.T, dtype=torch.float64) if timestep_map is None else timestep_map.double()

    # ----- tables -------------------------------------------------------------------------------
    def a(self, t: Tensor) -> Tensor:
        """Signal scale a_t (float64), for integer t >= -1."""
        return self._a[torch.as_tensor(t).long().cpu() + 1]

    def sigma(self, t: Tensor) -> Tensor:
        """Noise-to-signal ratio sigma_t = std(x_t|x_0) / a_t (float64), for integer t >= -1."""
        return self._sigma[torch.as_tensor(t).long().cpu() + 1]

    def std(self, t: Tensor) -> Tensor:
        """Standard deviation of x_t given x_0: a_t sigma_t (= sqrt(1 - alpha_bar_t) for VP)."""
        return self.a(t) * self.sigma(t)

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio a_t^2 / std_t^2 = 1 / sigma_t^2 (= alpha_bar / (1 - alpha_bar) for VP)."""
        return 1.0 / self.sigma(t) ** 2

    def model_time(self, t: Tensor) -> Tensor:
        """The time input of the network for index t (float32)."""
        return self.timestep_map[torch.as_tensor(t).long().cpu()].float()

    def fractional_t(self, sigma: Tensor) -> Tensor:
        """The fractional index whose log sigma interpolates the table linearly (float64), clamped to [0, T-1]."""
        log_tab = self._sigma[1:].log()
        log_s = torch.as_tensor(sigma, dtype=torch.float64).log().clamp(log_tab[0], log_tab[-1])
        hi = torch.searchsorted(log_tab, log_s).clamp(1, self.T - 1)
        lo = hi - 1
        w = (log_s - log_tab[lo]) / (log_tab[hi] - log_tab[lo])
        return lo.double() + w

    # ----- forward process ------------------------------------------------------------------------
    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """Sample q(x_t | x_0) = N(a_t x_0, a_t^2 sigma_t^2 I) by reparameterisation (Ho et al. 2020, Eq. 4)."""
        return bcast(self.a(t), x0) * x0 + bcast(self.std(t), x0) * eps

    def q_mean_std(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean (like x0) and std ((B,1,..)) of q(x_t | x_0)."""
        return bcast(self.a(t), x0) * x0, bcast(self.std(t), x0)

    # ----- transitions t -> s (s < t) -------------------------------------------------------------
    def transition_var(self, t: Tensor, s: Tensor) -> Tensor:
        """Variance of q(x_t | x_s): a_t^2 (sigma_t^2 - sigma_s^2); = beta_t when s = t - 1 (VP), the 'fixed large' variance."""
        return self.a(t) ** 2 * (self.sigma(t) ** 2 - self.sigma(s) ** 2)

    def posterior_var(self, t: Tensor, s: Tensor) -> Tensor:
        """Variance of q(x_s | x_t, x_0): a_s^2 sigma_s^2 (sigma_t^2 - sigma_s^2) / sigma_t^2; = beta_tilde_t when s = t - 1 (Ho et al. Eq. 7)."""
        sig_t2, sig_s2 = self.sigma(t) ** 2, self.sigma(s) ** 2
        return self.a(s) ** 2 * sig_s2 * (sig_t2 - sig_s2) / sig_t2

    def posterior_log_var_clipped(self, t: Tensor, s: Tensor) -> Tensor:
        """log posterior_var, with the zero variance of a final step (s = -1) replaced by that of step 1 -> 0.

        As improved DDPM's `posterior_log_variance_clipped`: log beta_tilde_0 = -inf becomes log beta_tilde_1.
        On a respaced process this is the respaced chain's own step 1 -> 0, as in improved DDPM.
        """
        t, s = torch.as_tensor(t).long().cpu(), torch.as_tensor(s).long().cpu()
        final = s < 0
        if self.T < 2:
            raise ValueError("a clipped posterior variance needs at least 2 timesteps")
        t_c = torch.where(final, torch.ones_like(t), t)
        s_c = torch.where(final, torch.zeros_like(s), s)
        return self.posterior_var(t_c, s_c).log()

    def posterior_coefs(self, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """Coefficients (c_x0, c_xt) of the posterior mean mu_tilde = c_x0 x_0 + c_xt x_t (Ho et al. Eq. 7, general s).

        c_xt = a_s sigma_s^2 / (a_t sigma_t^2); c_x0 = a_s - c_xt a_t.
        """
        c_xt = self.a(s) * self.sigma(s) ** 2 / (self.a(t) * self.sigma(t) ** 2)
        c_x0 = self.a(s) - c_xt * self.a(t)
        return c_x0, c_xt

    def posterior_mean(self, x0: Tensor, xt: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """Mean mu_tilde(x_t, x_0) of q(x_s | x_t, x_0)."""
        c_x0, c_xt = self.posterior_coefs(t, s)
        return bcast(c_x0, x0) * x0 + bcast(c_xt, xt) * xt

    # ----- parameterisations (closed-form maps between predictions) --------------------------------
    def x0_from_eps(self, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_0 = x_t / a_t - sigma_t eps."""
        return xt / bcast(self.a(t), xt) - bcast(self.sigma(t), xt) * eps

    def eps_from_x0(self, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """eps = (x_t / a_t - x_0) / sigma_t."""
        return (xt / bcast(self.a(t), xt) - x0) / bcast(self.sigma(t), xt)

    def v_target(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """v = (a_t eps - std_t... ) normalised: v = cos(phi) eps - sin(phi) x_0 with cos = 1/sqrt(1+sigma^2) (Salimans & Ho 2022).

        For VP this is sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0.
        """
        c, s_ = self._cos_sin(t, x0)
        return c * eps - s_ * x0

    def _cos_sin(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        sig = self.sigma(t)
        norm = (1 + sig**2).sqrt()
        return bcast(1 / norm, like), bcast(sig / norm, like)

    def x0_from_mean(self, xt: Tensor, t: Tensor, mean: Tensor) -> Tensor:
        """Invert the posterior mean of the step t -> t-1 for x_0 (the mu-parameterisation of Ho et al. Sec. 3.2)."""
        s = torch.as_tensor(t).long() - 1
        c_x0, c_xt = self.posterior_coefs(t, s)
        return (mean - bcast(c_xt, xt) * xt) / bcast(c_x0, xt)

    # ----- respacing --------------------------------------------------------------------------------
    def respace(self, steps) -> "NoiseProcess":
        """The process restricted to the increasing timesteps `steps` (improved DDPM Sec. 4, 'respacing').

        Index i of the new process is original step steps[i]; the network still sees the original time.
        """
        idx = torch.as_tensor(sorted(set(int(s) for s in steps)), dtype=torch.long)
        if idx.numel() == 0 or idx[0] < 0 or idx[-1] >= self.T:
            raise ValueError(f"respacing steps must lie in 0..{self.T - 1}")
        return self._respaced(self.a(idx), self.sigma(idx), self.timestep_map[idx])

    def _respaced(self, a: Tensor, sigma: Tensor, timestep_map: Tensor) -> "NoiseProcess":
        return NoiseProcess(a, sigma, timestep_map)
