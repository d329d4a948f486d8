"""The paper's pipeline on diffusers: attach the W+ branch to a StableDiffusion(XL)Pipeline, generate, score.

    with wplus.pipeline.attach(pipe, adapter, w_plus, scale=1.0, start=20):
        images = pipe(prompt, negative_prompt=NEGATIVE_PROMPT, generator=...).images

`python -m wplus generate` is the command line on top of it. Names load lazily (torch/diffusers
only when used).
"""
from __future__ import annotations

from wplus.lazy import lazy_getattr

_EXPORTS = {
    "attach": "wplus.pipeline.branch",
    "PipelineBranch": "wplus.pipeline.branch",
    "generate": "wplus.pipeline.sampling",
    "Settings": "wplus.pipeline.sampling",
    "load_pipeline": "wplus.pipeline.load",
    "identity_score": "wplus.pipeline.score",
    "face_embedding": "wplus.pipeline.score",
    "NEGATIVE_PROMPT": "wplus.pipeline.defaults",
    "DEFAULT_MODEL": "wplus.pipeline.defaults",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr("wplus.pipeline", _EXPORTS, globals())
