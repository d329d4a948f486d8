"""Forge's processing: the WebUI stand-in's, with Forge's resets of `forge_objects` around
`process_before_every_sampling` (twice in the hires pass) and `hr_cfg` (see ../README.md)."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from modules import sd_samplers, shared
from modules.shared import state

_spec = importlib.util.spec_from_file_location(
    "modules.a1111_processing", Path(__file__).resolve().parents[2] / "webui_stub" / "modules" / "processing.py")
_a1111 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_a1111)

Processed, create_infotext, process_images, process_images_inner = (
    _a1111.Processed, _a1111.create_infotext, _a1111.process_images, _a1111.process_images_inner)
StableDiffusionProcessing = _a1111.StableDiffusionProcessing


def _reset_forge_objects(p) -> None:
    model = p.sd_model
    model.forge_objects = model.forge_objects_after_applying_lora.shallow_copy()


class StableDiffusionProcessingTxt2Img(_a1111.StableDiffusionProcessingTxt2Img):
    def __init__(self, hr_cfg: float = 1.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.hr_cfg = hr_cfg  # Forge's API default

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        x = self.noise(self.latent_shape())
        _reset_forge_objects(self)
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(self, x=x, noise=x, c=conditioning,
                                                       uc=unconditional_conditioning)
        image_cond = x.new_zeros(x.shape[0], 5, 1, 1)
        samples = self.sampler.sample(self, x, conditioning, unconditional_conditioning, image_conditioning=image_cond)
        if not self.enable_hr:
            return samples
        if self.hr_checkpoint_model is not None:
            shared.sd_model = self.hr_checkpoint_model
        return self.sample_hr_pass(samples)

    def sample_hr_pass(self, samples):
        import torch

        if state.interrupted:
            return samples
        self.is_hr_pass = True
        self.extra_generation_params["Hires upscale"] = self.hr_scale
        samples = torch.nn.functional.interpolate(samples, scale_factor=self.hr_scale, mode="nearest")
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        noise = self.noise(samples.shape[1:])
        if self.scripts is not None:
            self.scripts.before_hr(self)
            self.scripts.process_before_every_sampling(self, x=samples, noise=noise, c=self.c, uc=self.uc)
        _reset_forge_objects(self)
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(self, x=samples, noise=noise, c=self.c, uc=self.uc)
        image_cond = samples.new_zeros(samples.shape[0], 5, 1, 1)
        samples = self.sampler.sample_img2img(self, samples, noise, self.c, self.uc,
                                              steps=self.hr_second_pass_steps or self.steps,
                                              image_conditioning=image_cond)
        self.is_hr_pass = False
        return samples


class StableDiffusionProcessingImg2Img(_a1111.StableDiffusionProcessingImg2Img):
    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        _reset_forge_objects(self)
        return super().sample(conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts)
