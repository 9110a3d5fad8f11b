"""Exact oracles for testing samplers without training: a Gaussian-mixture denoiser and distances to the truth."""

from difflab.oracle.distance import kl_floor, mixture_distance
from difflab.oracle.gmm import GMMOracle
from difflab.oracle.mixture import GaussianMixture, random_diagonal_mixture, ring_mixture

__all__ = ["GMMOracle", "GaussianMixture", "kl_floor", "mixture_distance", "random_diagonal_mixture", "ring_mixture"]
