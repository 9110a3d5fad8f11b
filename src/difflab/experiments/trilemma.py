"""The generative learning trilemma (seed 000): sampling speed against quality (FID) and diversity (recall).

A diffusion model buys quality with network evaluations: the comparison samples it at several step counts, each a
point (images/s, FID, precision, recall); a VAE or GAN is one point at one network call per image.
"""

from __future__ import annotations

from difflab.experiments.runs import GeneratorRun


def trilemma_steps(run: GeneratorRun, requested: tuple[int, ...], exclude: int | None = None) -> list[int]:
    """The step counts at which a diffusion run is sampled for the trilemma: the requested ones capped at T, increasing."""
    T = run.config["process"]["T"]
    return sorted(set(min(k, T) for k in requested) - {exclude})


def _fmt(v, digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def trilemma_markdown(report: dict) -> str:
    lines = ["# Trilemma: sampling speed vs quality (FID) and diversity (recall)", "",
             f"{report['n']} samples per point, batch {report['batch_size']}, {report['threads']} torch thread(s); images/s of the sampling loop "
             "on this machine (shared CPU: expect ±30%).", "",
             "| Model | sampler | steps | NFE | images/s | FID | Precision | Recall |", "|---|---|---|---|---|---|---|---|"]
    for p in report["trilemma"]:
        lines.append(f"| {p['model']} | {p['sampler']} | {p['steps']} | {p['nfe']} | {_fmt(p['images_per_s'], 1)} | {_fmt(p['fid'], 2)} | "
                     f"{_fmt(p['precision'])} | {_fmt(p['recall'])} |")
    return "\n".join(lines) + "\n"
