"""Which samplers take which guidance, and why: the Prediction fields each sampler reads.

Guidance wrappers change every field of the Prediction (guidance/classifier.py, guidance/cfg.py), so a sampler
takes guidance when (1) it passes y on to every denoiser call and (2) it reads only Prediction fields, never
the network itself. The field it reads decides the form of classifier guidance it gets:

  mean (+ log_var)  -> Algorithm 1 of Dhariwal & Nichol 2021: mu + s Sigma grad log p(y|x_t)
  x0 / eps / score  -> Algorithm 2: eps - s sqrt(1 - alpha_bar_t) grad log p(y|x_t) (score + s grad log p)

Classifier-free guidance combines eps, and x0, score and mean follow from it, so it is the same for all.
Each sampler's row is its `guided` entry in the sampler registry (samplers/registry.py); a sampler registered
without one is refused with guidance until it is checked against (1) and (2).
"""

from __future__ import annotations

from difflab.errors import UserError
from difflab.samplers import SAMPLERS

GUIDANCE_KINDS = ("none", "classifier", "cfg")


def guided_samplers() -> list[str]:
    return [name for name, s in SAMPLERS.items() if s.guided is not None]


def check_guidance_sampler(sampler: str, guidance: str) -> None:
    """Refuse guidance on a sampler that has not been checked to pass y and read only Prediction fields."""
    if guidance not in GUIDANCE_KINDS:
        raise UserError(f"unknown guidance '{guidance}'; valid: {', '.join(GUIDANCE_KINDS)}")
    spec = SAMPLERS.get(sampler)
    if guidance != "none" and (spec is None or spec.guided is None):
        raise UserError(f"sampler '{sampler}' cannot take {guidance} guidance: it is not known to pass the labels to every "
                        f"denoiser call and read only Prediction fields; use one of {', '.join(guided_samplers())}")
