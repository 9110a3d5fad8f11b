"""Training objectives (L_simple, L_vlb, L_hybrid), timestep samplers, the bound's Gaussian terms and bits/dim."""

from difflab.losses.bpd import bits_per_dim
from difflab.losses.gaussian import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from difflab.losses.objectives import DiffusionLoss, LossConfig, LossRecord, build_loss, simple_target
from difflab.losses.timesteps import LossSecondMomentTimesteps, UniformTimesteps
from difflab.losses.vlb import predict_step, prior_bpd, prior_log_var, vlb_terms

__all__ = [
    "DiffusionLoss", "LossConfig", "LossRecord", "LossSecondMomentTimesteps", "UniformTimesteps",
    "bits_per_dim", "build_loss", "discretized_gaussian_log_likelihood", "mean_flat", "normal_kl",
    "predict_step", "prior_bpd", "prior_log_var", "simple_target", "vlb_terms",
]
