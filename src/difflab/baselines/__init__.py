"""The classic baselines of seed 000's experiment: a convolutional VAE and a DCGAN, trained by the shared Trainer.

Run kinds "vae" and "dcgan" beside the diffusion runs: presets `digits-vae`, `digits-dcgan`; `train_baseline_run`,
`load_baseline`, `sample_baseline`. See docs/baselines.md.
"""

from difflab.baselines.config import (
    BASELINE_KINDS,
    BASELINE_PRESETS,
    BaselineRunConfig,
    BaselineSampleConfig,
    GANRunConfig,
    VAEEvalConfig,
    VAERunConfig,
    baseline_kind_of,
    resolve_baseline_config,
)
from difflab.baselines.gan import GANTask, discriminator_loss, generator_loss
from difflab.baselines.run import (
    LoadedBaseline,
    baseline_kind,
    build_baseline_model,
    is_baseline_run,
    load_baseline,
    report_elbo,
    sample_baseline,
    train_baseline_run,
)
from difflab.baselines.vae import ELBOTerms, VAETask, elbo_terms, evaluate_elbo, gaussian_kl_standard, reconstruction_nll

__all__ = [
    "BASELINE_KINDS", "BASELINE_PRESETS", "BaselineRunConfig", "BaselineSampleConfig", "ELBOTerms", "GANRunConfig", "GANTask",
    "LoadedBaseline", "VAEEvalConfig", "VAERunConfig", "VAETask", "baseline_kind", "baseline_kind_of", "build_baseline_model",
    "discriminator_loss", "elbo_terms", "evaluate_elbo", "gaussian_kl_standard", "generator_loss", "is_baseline_run",
    "load_baseline", "reconstruction_nll", "report_elbo", "resolve_baseline_config", "sample_baseline", "train_baseline_run",
]
