"""Global state of the stand-in: opts, state, the loaded model."""
from __future__ import annotations

import types

from modules import options
from modules.paths import data_path, models_path, script_path  # noqa: F401

OptionInfo = options.OptionInfo

opts = options.Options({
    "batch_cond_uncond": True,
    "skip_early_cond": 0.0,
    "s_min_uncond_all": False,
    "pad_cond_uncond": False,
    "pad_cond_uncond_v0": False,
    "hires_fix_refiner_pass": "second pass",
    "refiner_switch_by_sample_steps": False,
})


class State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.interrupted = False
        self.skipped = False
        self.stopping_generation = False
        self.sampling_step = 0
        self.sampling_steps = 0
        self.job = ""
        self.job_count = -1

    def interrupt(self) -> None:
        self.interrupted = True

    def nextjob(self) -> None:
        pass


state = State()
sd_model = None
cmd_opts = types.SimpleNamespace(api=False, nowebui=False, lowvram=False, medvram=False)
