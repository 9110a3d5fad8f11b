"""Training objectives (L_simple, L_vlb, L_hybrid), timestep samplers, the bound's Gaussian terms and bits/dim;
the baselines' objectives (the VAE's ELBO, the GAN losses)."""

from difflab.losses.bpd import bits_per_dim
from difflab.losses.elbo import ELBOTerms, elbo_terms, evaluate_elbo, gaussian_kl_standard, reconstruction_nll
from difflab.losses.gan import discriminator_loss, generator_loss
from difflab.losses.gaussian import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from difflab.losses.objectives import DiffusionLoss, LossConfig, LossRecord, build_loss, simple_target
from difflab.losses.timesteps import LossSecondMomentTimesteps, UniformTimesteps
from difflab.losses.vlb import predict_step, prior_bpd, prior_log_var, vlb_terms

__all__ = [
    "DiffusionLoss", "ELBOTerms", "LossConfig", "LossRecord", "LossSecondMomentTimesteps", "UniformTimesteps",
    "bits_per_dim", "build_loss", "discriminator_loss", "elbo_terms", "evaluate_elbo", "gaussian_kl_standard", "generator_loss",
    "discretized_gaussian_log_likelihood", "mean_flat", "normal_kl",
    "predict_step", "prior_bpd", "prior_log_var", "reconstruction_nll", "simple_target", "vlb_terms",
]
