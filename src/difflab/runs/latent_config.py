"""The `latent` section of a diffusion backbone's run config: which autoencoder run's latent space it diffuses in
(latent diffusion, Rombach et al. 2022). Empty means pixel space. Any backbone config (U-Net, DiT) can hold one."""

from __future__ import annotations

import math
from dataclasses import dataclass

from difflab.configs import field
from difflab.errors import UserError


@dataclass(frozen=True)
class LatentConfig:
    autoencoder: str = field("", help="run folder of an 'autoencoder' run (difflab train --config digits32-ae, or difflab import diffusers-vae) "
                                      "whose latents the backbone is trained on and whose decoder turns samples into images; empty: pixel space")
    autoencoder_sha256: str = field("", help="SHA-256 of that run's config.json and newest checkpoint, written when training starts; "
                                             "the run refuses an autoencoder folder that changed since (retrain the latent run)")
    scale_factor: float = field(0.0, help="z = scale_factor * mean of q(z|x): 0 measures it as 1 / std of the training set's latents when "
                                          "training starts and writes it here (Rombach et al. 2022 Sec. 4.3.2; Stable Diffusion's VAE: 0.18215)")

    def __post_init__(self):
        if not isinstance(self.autoencoder, str):
            raise UserError(f"latent.autoencoder must be a run folder path or empty; got {self.autoencoder!r}")
        if not (0 <= self.scale_factor < math.inf):
            raise UserError(f"latent.scale_factor must be a finite number > 0, or 0 to measure it; got {self.scale_factor}")
        if self.autoencoder_sha256 and not self.autoencoder:
            raise UserError("latent.autoencoder_sha256 is set but latent.autoencoder is empty: name the autoencoder run")

    @property
    def enabled(self) -> bool:
        """True for a latent run (an autoencoder is named), False in pixel space."""
        return bool(self.autoencoder)
