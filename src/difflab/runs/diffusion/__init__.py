"""The diffusion run kind: its config (RunConfig), training task, presets and RunKind."""

from difflab.runs.diffusion.config import RunConfig, SampleConfig
from difflab.runs.diffusion.kind import KIND, check_data_fits_model
from difflab.runs.diffusion.presets import RUN_PRESETS
from difflab.runs.diffusion.task import DiffusionTask

__all__ = ["KIND", "RUN_PRESETS", "DiffusionTask", "RunConfig", "SampleConfig", "check_data_fits_model"]
