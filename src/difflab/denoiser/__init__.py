"""Denoisers: the interface between networks (or oracles, or guidance) and every algorithm above them."""

from difflab.denoiser.base import Denoiser, Prediction, as_timesteps, bcast, complete_prediction
from difflab.denoiser.model import DenoiserConfig, ModelDenoiser

__all__ = ["Denoiser", "DenoiserConfig", "ModelDenoiser", "Prediction", "as_timesteps", "bcast", "complete_prediction"]
