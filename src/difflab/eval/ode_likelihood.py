"""Log-likelihood from the probability-flow ODE (Song et al. 2021, Sec. 4.3 and App. D.2) with Hutchinson's trace
estimator (Grathwohl et al. 2019, FFJORD).

In the sigma view x_hat = x_t / a_t = x_0 + sigma eps the probability-flow ODE of both VP and VE processes is
dx_hat/dsigma = eps(x_hat, sigma) (samplers/sigma.py). By the instantaneous change of variables (Chen et al. 2018,
Thm. 1), d log p_sigma(x_hat(sigma)) / dsigma = -div_x eps(x_hat(sigma), sigma) along a solution, so integrating
from sigma_min (the data end) up to sigma_max (the prior end):

    log p_{sigma_min}(x) = log p_{sigma_max}(x_hat(sigma_max)) + int_{sigma_min}^{sigma_max} div_x eps(x_hat, sigma) dsigma.

The state [x_hat, int div] is integrated jointly by adaptive RK45 in u = log sigma (dx_hat/du = sigma eps,
d(int)/du = sigma div eps), like the ODE sampler. The prior at sigma_max is the one the variational bound and
`prior_sample` use, x_t ~ N(0, a_T^2 (1 + sigma_T^2) I), i.e. x_hat ~ N(0, (1 + sigma_max^2) I): exactly N(0, I) in
x_t for VP (1/a^2 = 1 + sigma^2 there), and the marginal of unit-variance data for VE.

Densities are of x_hat, i.e. in data coordinates (x_hat = x_0 at sigma = 0), nats, per example.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from difflab.denoiser import Denoiser
from difflab.errors import UserError
from difflab.samplers.rk45 import solve_ivp_rk45
from difflab.samplers.sigma import sigma_of

HutchinsonKind = Literal["rademacher", "gaussian", "exact"]
HUTCHINSON_KINDS = ("rademacher", "gaussian", "exact")
LN2 = math.log(2.0)


def check_ode_options(rtol: float, atol: float, hutchinson: str) -> None:
    """One-line errors for the solver tolerances and the divergence estimator."""
    if not (rtol > 0 and atol > 0 and math.isfinite(rtol) and math.isfinite(atol)):
        raise UserError(f"--rtol and --atol must be positive; got rtol={rtol}, atol={atol}")
    if hutchinson not in HUTCHINSON_KINDS:
        raise UserError(f"unknown --hutchinson {hutchinson!r}; valid: {', '.join(HUTCHINSON_KINDS)}")


def hutchinson_noise(kind: str, shape, generator: torch.Generator | None) -> Tensor | None:
    """The probe z of z^T J z (float64, CPU): Rademacher +-1 or standard normal; None for the exact divergence."""
    if kind == "exact":
        return None
    if kind == "gaussian":
        return torch.randn(*shape, generator=generator, dtype=torch.float64)
    return torch.randint(0, 2, tuple(shape), generator=generator).double() * 2 - 1


def divergence(f: Tensor, x: Tensor, z: Tensor | None) -> Tensor:
    """div_x f per example, (B,) float64, for f(x) computed from x (B, ...) with a graph and no cross-example terms.

    z given: Hutchinson's estimate z^T (df/dx) z, one vector-Jacobian product (E_z[z z^T] = I for Rademacher and
    Gaussian z, so it is unbiased). z None: the exact trace, one vector-Jacobian product per dimension (tiny d only).
    """
    b = x.shape[0]
    if z is not None:
        (vjp,) = torch.autograd.grad(f, x, grad_outputs=z.to(f), retain_graph=False)
        return (vjp.double() * z.to(vjp.device)).reshape(b, -1).sum(1)
    d = x[0].numel()
    flat = f.reshape(b, d)
    div = torch.zeros(b, dtype=torch.float64, device=x.device)
    for i in range(d):  # row i of the Jacobian of every example at once: d f_i / d x, then its i-th entry
        (g,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=i < d - 1)
        div += g.reshape(b, d)[:, i].double()
    return div


def gaussian_log_prob(x: Tensor, var: float) -> Tensor:
    """log N(x; 0, var I) per example, (B,) float64."""
    flat = x.double().reshape(x.shape[0], -1)
    d = flat.shape[1]
    return -0.5 * (d * math.log(2 * math.pi * var) + flat.pow(2).sum(1) / var)


def ode_log_likelihood(
    denoiser: Denoiser,
    x: Tensor,
    y: Tensor | None = None,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    hutchinson: HutchinsonKind = "rademacher",
    generator: torch.Generator | None = None,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
) -> dict:
    """log p_{sigma_min}(x) under the denoiser's probability-flow ODE (Song et al. 2021, App. D.2), per example.

    x: (B, ...) points in data coordinates (a clean image, or x_hat at sigma_min); y: labels or None. The denoiser
    must offer `at_sigma(x_hat, sigma, y) -> (x0, eps)` differentiable in x_hat (ModelDenoiser does; build it with
    clip_x0=False for the model's own flow: clipping changes the ODE). sigma_min defaults to the process's smallest
    noise level sigma_0 (a discretely trained network is not defined below it), sigma_max to its largest. One
    Hutchinson probe z per example, drawn from `generator` and fixed along the trajectory (FFJORD). The state is
    float64; the denoiser sees x's dtype.

    Returns logp (B,) float64 = prior_logp + delta_logp; prior_logp (B,) = log N(x_hat(sigma_max); 0, (1 +
    sigma_max^2) I); delta_logp (B,) = int div eps dsigma; x_hat_max (like x, float64), the end point (for a
    caller's own prior); nfe = drift evaluations (each one network evaluation and one vector-Jacobian product,
    d of them for "exact"); sigma_min, sigma_max.
    """
    check_ode_options(rtol, atol, hutchinson)
    if not hasattr(denoiser, "at_sigma"):
        raise UserError("the ODE likelihood needs a denoiser with at_sigma (a continuous noise level)")
    p = denoiser.process
    s_lo = sigma_of(p, 0) if sigma_min is None else float(sigma_min)
    s_hi = sigma_of(p, p.T - 1) if sigma_max is None else float(sigma_max)
    if not 0 < s_lo < s_hi:
        raise UserError(f"need 0 < sigma_min < sigma_max; got {s_lo}, {s_hi}")
    b, shape, dtype = x.shape[0], x.shape[1:], x.dtype
    d = x[0].numel()
    z = hutchinson_noise(hutchinson, x.shape, generator)
    z = None if z is None else z.to(x.device)

    def drift(u: float, state: Tensor) -> Tensor:
        """d[x_hat, int div]/du = sigma [eps, div eps], state (B, d + 1) float64."""
        sigma = math.exp(u)
        with torch.enable_grad():
            x_hat = state[:, :d].reshape(b, *shape).to(dtype).requires_grad_(True)
            eps = denoiser.at_sigma(x_hat, sigma, y)[1]
            if not eps.requires_grad:
                raise UserError("the denoiser's at_sigma is not differentiable in x_hat (no gradient): "
                                "the ODE likelihood needs d eps / d x_hat")
            div = divergence(eps, x_hat, z)
        return sigma * torch.cat([eps.detach().double().reshape(b, d), div[:, None]], 1)

    state = torch.cat([x.detach().double().reshape(b, d), torch.zeros(b, 1, dtype=torch.float64, device=x.device)], 1)
    end, nfe = solve_ivp_rk45(drift, state, math.log(s_lo), math.log(s_hi), rtol=rtol, atol=atol)
    x_hat_max = end[:, :d].reshape(b, *shape)
    delta = end[:, d].cpu()
    prior = gaussian_log_prob(x_hat_max, 1.0 + s_hi**2).cpu()
    return {"logp": prior + delta, "prior_logp": prior, "delta_logp": delta, "x_hat_max": x_hat_max, "nfe": nfe,
            "sigma_min": s_lo, "sigma_max": s_hi}


def ode_bits_per_dim(
    denoiser: Denoiser,
    x: Tensor,
    y: Tensor | None = None,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    hutchinson: HutchinsonKind = "rademacher",
    generator: torch.Generator | None = None,
    batch_size: int = 64,
    dequantize: bool = True,
    levels: int = 256,
    sigma_min: float | None = None,
    progress: bool = False,
) -> dict:
    """Bits/dim of data in [-1, 1] with `levels` values per dimension, from the ODE likelihood, in batches.

    Convention (uniform dequantisation, Ho et al. 2020 / Song et al. 2021 App. D.2): the value x = 2k/(levels-1) - 1
    owns the bin [x - 1/(levels-1), x + 1/(levels-1)) of width Delta = 2/(levels-1) (the bins of the discretized
    decoder of the variational bound); with u ~ U(-Delta/2, Delta/2)^D, Jensen gives
    log P(bin) >= E_u log p(x + u) + D log Delta, so bits_per_dim = -(log p(x + u) + D log Delta) / (D ln 2)
    = -(log p(x + u) - D log 127.5) / (D ln 2) for 256 levels: a stochastic upper bound on the discrete NLL
    (one u and one Hutchinson probe per example; both unbiased for the mean). continuous_bpd = -log p(x + u) / (D ln 2)
    is the continuous density's NLL in these [-1, 1] coordinates (no bin term; can be negative).
    dequantize=False evaluates the density at x itself (then bits_per_dim is not a bound, only a convention).

    Noise order per batch: u (if dequantize), then z, from `generator` on the CPU.
    Returns bits_per_dim, bits_per_dim_se (over examples), continuous_bpd, continuous_bpd_se, prior_bpd (mean of
    -prior_logp / (D ln 2)), per_example_bpd (N,), nfe_mean (drift evaluations per batch solve) and nfe (list).
    """
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1; got {batch_size}")
    if levels < 2:
        raise UserError(f"levels must be at least 2; got {levels}")
    if x.shape[0] == 0:
        raise UserError("no examples to evaluate")
    n, d = x.shape[0], x[0].numel()
    delta = 2.0 / (levels - 1)
    cont, prior, nfes = [], [], []
    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="ODE bits/dim", unit="batch")
    for start in starts:
        xb = x[start : start + batch_size]
        yb = None if y is None else y[start : start + batch_size]
        if dequantize:
            u = (torch.rand(xb.shape, generator=generator, dtype=torch.float64) - 0.5) * delta
            xb = (xb.double() + u.to(xb.device)).to(xb.dtype)
        res = ode_log_likelihood(denoiser, xb, yb, rtol=rtol, atol=atol, hutchinson=hutchinson, generator=generator,
                                 sigma_min=sigma_min)
        if not bool(torch.isfinite(res["logp"]).all()):
            raise UserError("the ODE log-likelihood is not finite: the model produces NaN or inf; check the checkpoint")
        cont.append(-res["logp"] / (d * LN2))
        prior.append(-res["prior_logp"] / (d * LN2))
        nfes.append(res["nfe"])
    cont_t = torch.cat(cont)
    bpd = cont_t - math.log2(delta)  # + log2(127.5) = 6.994 for 256 levels
    se = float(cont_t.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan
    return {
        "bits_per_dim": float(bpd.mean()), "bits_per_dim_se": se,
        "continuous_bpd": float(cont_t.mean()), "continuous_bpd_se": se,
        "prior_bpd": float(torch.cat(prior).mean()), "per_example_bpd": bpd,
        "nfe_mean": sum(nfes) / len(nfes), "nfe": nfes, "sigma_min": res["sigma_min"], "sigma_max": res["sigma_max"],
        "dequantize": dequantize, "levels": levels,
    }
