"""difflab: train, sample, guide and evaluate diffusion models (and their baselines) from one CLI and one Python API.

    import difflab
    run = difflab.load_run("runs/demo")
    result = run.sample(16, sampler="ddim", steps=50, seed=0)      # what `difflab sample --run runs/demo ...` draws

The names below are loaded on first use, so `import difflab.process` (or any other layer) stays light.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Run", "SampleRequest", "SampleResult", "evaluate", "load_run", "train"]


def __getattr__(name: str):
    if name in __all__:
        from difflab import api

        return getattr(api, name)
    raise AttributeError(f"module 'difflab' has no attribute {name!r}")
