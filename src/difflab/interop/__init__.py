"""Other codebases' checkpoints and layouts: guided-diffusion (ADM), improved-diffusion and DiT imports, the diffusers U-Net layout.

`import_checkpoint(source, checkpoint, out)` is what `difflab import SOURCE` runs: it refuses a released file of the
other source by name (a common mix-up), then imports with that source's module.
"""

from __future__ import annotations

from pathlib import Path

from difflab.errors import UserError
from difflab.interop.dit import DIT_RELEASES, import_dit_checkpoint
from difflab.interop.guided_diffusion import RELEASES, import_guided_checkpoint
from difflab.interop.improved_diffusion import IMPROVED_RELEASES, import_improved_checkpoint

SOURCES = ("guided-diffusion", "improved-diffusion", "dit")


def import_checkpoint(source: str, checkpoint: str | Path, out: str | Path, *, preset: str | None = None, **options) -> Path:
    """Import `checkpoint` of `source` (guided-diffusion: kind=, overrides=, force=; improved-diffusion, dit: overrides=, force=)."""
    name = Path(checkpoint).name
    if source != "dit" and preset is None and name in DIT_RELEASES:
        raise UserError(f"{name} is a DiT release; import it with `difflab import dit`")
    if source == "dit":
        return import_dit_checkpoint(checkpoint, out, preset=preset, **options)
    if source == "guided-diffusion":
        if preset is None and name in IMPROVED_RELEASES:
            raise UserError(f"{name} is an improved-diffusion release; import it with `difflab import improved-diffusion`")
        return import_guided_checkpoint(checkpoint, out, preset=preset, **options)
    if source == "improved-diffusion":
        if preset is None and name in RELEASES:
            raise UserError(f"{name} is a guided-diffusion release; import it with `difflab import guided-diffusion`")
        return import_improved_checkpoint(checkpoint, out, preset=preset, **options)
    raise UserError(f"unknown import source {source!r}; valid: {', '.join(SOURCES)}")


__all__ = ["SOURCES", "import_checkpoint"]
