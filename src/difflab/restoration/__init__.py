"""Restoration tasks over any Denoiser (inpainting, denoising, SDEdit) and image-conditional models (docs/restoration.md)."""

from difflab.restoration.conditioning import (
    CONDITION_KINDS,
    ConditionConfig,
    Degradation,
    ImageConditioned,
    build_degradation,
    downsample,
    grayscale,
    inpaint_condition,
    upsample,
)
from difflab.restoration.denoise import DENOISE_METHODS, check_noise_sigma, denoise, matching_step, noisy_to_xt
from difflab.restoration.img2img import check_strength, sdedit, strength_step
from difflab.restoration.inpaint import jump_schedule, repaint, repaint_nfe
from difflab.restoration.masks import MASK_KINDS, center_mask, left_mask, make_masks, random_box_masks, read_mask_file
from difflab.restoration.quality import color_error, mse, psnr
from difflab.restoration.schedule import steps_from

__all__ = [
    "CONDITION_KINDS", "DENOISE_METHODS", "MASK_KINDS", "ConditionConfig", "Degradation", "ImageConditioned",
    "build_degradation", "center_mask", "check_noise_sigma", "check_strength", "color_error", "denoise", "downsample", "grayscale",
    "inpaint_condition", "jump_schedule", "left_mask", "make_masks", "matching_step", "mse", "noisy_to_xt", "psnr",
    "random_box_masks", "read_mask_file", "repaint", "repaint_nfe", "sdedit", "steps_from",
    "strength_step", "upsample",
]
