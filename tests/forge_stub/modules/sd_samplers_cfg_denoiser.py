"""Forge's CFG denoiser: the callback sees the latent's B rows; skip-early-CFG / NGMS set the scale
to 1 after it (so Forge drops the uncond there, not the callback); Forge's sampling function
makes the UNet calls (see ../README.md)."""
from __future__ import annotations

from backend.sampling import sampling_function

from modules import shared
from modules.script_callbacks import (
    AfterCFGCallbackParams,
    CFGDenoiserParams,
    cfg_after_cfg_callback,
    cfg_denoiser_callback,
)
from modules.sd_samplers_common import InterruptedException
from modules.shared import opts, state


class CFGDenoiser:
    def __init__(self, sampler):
        self.sampler = sampler
        self.step = 0
        self.steps = None
        self.total_steps = None
        self.p = None
        self.image_cfg_scale = None
        self.init_latent = None

    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        if state.interrupted or state.skipped:
            raise InterruptedException
        cond_composition, tensor = cond
        params = CFGDenoiserParams(x, image_cond, sigma, state.sampling_step, state.sampling_steps, tensor, uncond,
                                   self)
        cfg_denoiser_callback(params)
        if self.p.is_hr_pass:
            cond_scale = self.p.hr_cfg
        if opts.skip_early_cond > 0 and self.step / self.total_steps <= opts.skip_early_cond:
            cond_scale = 1.0
            self.p.extra_generation_params["Skip Early CFG"] = opts.skip_early_cond
        elif (self.step % 2 or opts.s_min_uncond_all) and s_min_uncond > 0 and sigma[0] < s_min_uncond:
            cond_scale = 1.0
            self.p.extra_generation_params["NGMS"] = s_min_uncond
        denoised = sampling_function(shared.sd_model.forge_objects.unet, params, cond_scale, cond_composition)
        after = AfterCFGCallbackParams(denoised, state.sampling_step, state.sampling_steps)
        cfg_after_cfg_callback(after)
        self.step += 1
        return after.x
