"""One call from a W+ code to images, with the paper's demo defaults (`generate_idnoise` of
csxmli2016/w-plus-adapter): Euler, guidance 7.5, 30 steps, λ 1.0, start 20 %, its negative prompt,
the seed as `torch.Generator(device).manual_seed(seed)` handed to the pipeline.

    pipe = load_pipeline("stable-diffusion-v1-5/stable-diffusion-v1-5")
    images = generate(pipe, "models/wplus_adapter.bin", w_plus, "a woman wearing a spacesuit", seed=23)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from wplus.pipeline.branch import PipelineBranch
from wplus.pipeline.defaults import (
    DEFAULT_GUIDANCE,
    DEFAULT_SCALE,
    DEFAULT_SEED,
    DEFAULT_START,
    DEFAULT_STEPS,
    NEGATIVE_PROMPT,
)
from wplus.pipeline.load import set_freeu


@dataclass
class Settings:
    """Everything of one image but the identity and λ (those vary across a grid)."""

    prompt: str
    negative_prompt: str = NEGATIVE_PROMPT
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    seed: int = DEFAULT_SEED
    width: int | None = None  # None: the model's native size (512 for SD1.5)
    height: int | None = None
    num_images: int = 1
    freeu: bool = False


def run(pipe: Any, settings: Settings) -> list:
    """The pipeline call itself (with or without a branch attached): a fresh seeded generator each time,
    so every cell of a grid shows the same scene."""
    set_freeu(pipe, settings.freeu)
    generator = torch.Generator(pipe.device).manual_seed(int(settings.seed))
    return pipe(prompt=settings.prompt, negative_prompt=settings.negative_prompt or None,
                num_inference_steps=settings.steps, guidance_scale=settings.guidance, width=settings.width,
                height=settings.height, num_images_per_prompt=settings.num_images, generator=generator).images


def generate(pipe: Any, adapter: Any, w_plus: Any, prompt: str, scale: float = DEFAULT_SCALE,
             start: float = DEFAULT_START, **settings: Any) -> list:
    """Images of `w_plus`'s person for `prompt`; `settings` are `Settings` fields (steps, seed, …)."""
    with PipelineBranch(pipe, adapter, w_plus, scale=scale, start=start):
        return run(pipe, Settings(prompt=prompt, **settings))
