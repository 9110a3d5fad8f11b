"""Guidance as Denoisers that wrap a Denoiser: classifier guidance (ADM) and classifier-free guidance."""

from difflab.guidance.cfg import ClassifierFreeGuidance
from difflab.guidance.classifier import (
    ClassifierGuidance,
    NetClassifier,
    NoisyClassifier,
    check_same_process,
    guide_prediction,
    log_prob_and_grad,
)
from difflab.guidance.mixture import MixtureClassifier
from difflab.guidance.support import GUIDANCE_KINDS, check_guidance_sampler, guided_samplers

__all__ = [
    "GUIDANCE_KINDS", "ClassifierFreeGuidance", "ClassifierGuidance", "MixtureClassifier", "NetClassifier",
    "NoisyClassifier", "check_guidance_sampler", "check_same_process", "guide_prediction", "guided_samplers", "log_prob_and_grad",
]
