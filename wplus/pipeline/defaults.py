"""The paper's demo settings (`test_demo.ipynb` / `generate_idnoise` of csxmli2016/w-plus-adapter) and
their checks; no heavy imports, so the command line's --help stays fast."""
from __future__ import annotations

from wplus.errors import WPlusError

#: The paper's demo model (runwayml/stable-diffusion-v1-5, now published under this id).
DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
NEGATIVE_PROMPT = "monochrome, lowres, bad anatomy, worst quality, low quality"
DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 7.5
DEFAULT_SCALE = 1.0  # λ
DEFAULT_START = 20.0  # percent of the steps before the identity is injected
DEFAULT_SEED = 42
#: FreeU values of the paper's demo (its figures use them); off by default.
FREEU = {"s1": 0.6, "s2": 0.4, "b1": 1.1, "b2": 1.2}
#: --scheduler name -> (diffusers class, the WebUI's sampler name for the infotext).
SCHEDULERS = {
    "euler": ("EulerDiscreteScheduler", "Euler"),
    "euler-a": ("EulerAncestralDiscreteScheduler", "Euler a"),
    "ddim": ("DDIMScheduler", "DDIM"),
    "dpm++": ("DPMSolverMultistepScheduler", "DPM++ 2M"),
    "unipc": ("UniPCMultistepScheduler", "UniPC"),
    "pndm": ("PNDMScheduler", "PLMS"),
}


def check_scale(scale: float) -> float:
    value = float(scale)
    if value != value or abs(value) == float("inf"):
        raise WPlusError(f"λ (scale) must be a finite number; got {scale}")
    return value


def check_start(start: float) -> float:
    value = float(start)
    if not 0 <= value <= 100:
        raise WPlusError(f"start is a percentage of the steps, 0..100; got {start}")
    return value
