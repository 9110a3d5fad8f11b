"""Which samplers take which guidance, and why: the Prediction fields each sampler reads.

Guidance wrappers change every field of the Prediction (guidance/classifier.py, guidance/cfg.py), so a sampler
takes guidance when (1) it passes y on to every denoiser call and (2) it reads only Prediction fields, never
the network itself. The field it reads decides the form of classifier guidance it gets:

  mean (+ log_var)  -> Algorithm 1 of Dhariwal & Nichol 2021: mu + s Sigma grad log p(y|x_t)
  x0 / eps / score  -> Algorithm 2: eps - s sqrt(1 - alpha_bar_t) grad log p(y|x_t) (score + s grad log p)

Classifier-free guidance combines eps, and x0, score and mean follow from it, so it is the same for all.
A sampler registered later is refused with guidance until its row is added here (after checking 1 and 2).
"""

from __future__ import annotations

from dataclasses import dataclass

from difflab.errors import UserError

GUIDANCE_KINDS = ("none", "classifier", "cfg")


@dataclass(frozen=True)
class GuidedSampler:
    reads: str  # the Prediction fields the sampler uses
    classifier_form: str  # the form of classifier guidance those fields carry


GUIDED_SAMPLERS: dict[str, GuidedSampler] = {
    "ddpm": GuidedSampler("mean, log_var", "ancestral: mean shift (Algorithm 1)"),
    "ddim": GuidedSampler("x0, eps", "eps (Algorithm 2)"),
    "pc": GuidedSampler("score (predictor 'reverse_diffusion') or mean, log_var ('ancestral'); score in the corrector",
                        "eps/score (Algorithm 2); the ancestral predictor gets the mean shift (Algorithm 1)"),
    "langevin": GuidedSampler("eps (as the score -eps/sigma), x0 for the final denoising", "eps/score (Algorithm 2)"),
    "euler": GuidedSampler("x0", "eps (Algorithm 2): x0 is recomputed from the guided eps"),
    "heun": GuidedSampler("x0", "eps (Algorithm 2)"),
    "dpmpp-2m": GuidedSampler("x0", "eps (Algorithm 2)"),
    "dpmpp-3m": GuidedSampler("x0", "eps (Algorithm 2)"),
    "dpmpp-2s": GuidedSampler("x0", "eps (Algorithm 2)"),
    "unipc": GuidedSampler("x0", "eps (Algorithm 2)"),
    "ode-rk45": GuidedSampler("eps, interpolated in log sigma between the two neighbouring timesteps (guided at both)",
                              "eps (Algorithm 2)"),
}


def check_guidance_sampler(sampler: str, guidance: str) -> None:
    """Refuse guidance on a sampler that has not been checked to pass y and read only Prediction fields."""
    if guidance not in GUIDANCE_KINDS:
        raise UserError(f"unknown guidance '{guidance}'; valid: {', '.join(GUIDANCE_KINDS)}")
    if guidance != "none" and sampler not in GUIDED_SAMPLERS:
        raise UserError(f"sampler '{sampler}' cannot take {guidance} guidance: it is not known to pass the labels to every "
                        f"denoiser call and read only Prediction fields; use one of {', '.join(GUIDED_SAMPLERS)}")
