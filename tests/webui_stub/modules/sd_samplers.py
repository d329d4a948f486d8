"""Euler sampler for the stand-in, with the WebUI's step bookkeeping: `launch_sampling` sets
`state.sampling_steps`/`sampling_step = 0` and the denoiser's `steps`/`total_steps`; the per-step
callback sets `state.sampling_step = i` after the model call of step i; an interrupt returns the
last latent."""
from __future__ import annotations

import torch

from modules.sd_samplers_cfg_denoiser import CFGDenoiser
from modules.sd_samplers_common import InterruptedException
from modules.shared import state

SIGMA_MAX, SIGMA_MIN = 14.6, 0.03


def full_sigmas(steps: int) -> torch.Tensor:
    ramp = torch.linspace(0, 1, steps)
    rho = 7.0
    sig = (SIGMA_MAX ** (1 / rho) + ramp * (SIGMA_MIN ** (1 / rho) - SIGMA_MAX ** (1 / rho))) ** rho
    return torch.cat([sig, torch.zeros(1)])


class Sampler:
    def __init__(self, name: str = "Euler"):
        self.name = name
        self.model_wrap_cfg = CFGDenoiser(self)
        self.last_latent = None

    def _initialize(self, p) -> None:
        cfg = self.model_wrap_cfg
        cfg.p = p
        cfg.image_cfg_scale = getattr(p, "image_cfg_scale", None)
        cfg.init_latent = getattr(p, "init_latent", None)

    def _launch(self, steps: int, func):
        self.model_wrap_cfg.steps = steps
        self.model_wrap_cfg.total_steps = steps
        state.sampling_steps = steps
        state.sampling_step = 0
        try:
            return func()
        except InterruptedException:
            return self.last_latent

    def _euler(self, p, x, sigmas, cond, uncond, image_conditioning):
        s_in = x.new_ones([x.shape[0]])
        for i in range(len(sigmas) - 1):
            denoised = self.model_wrap_cfg.forward(x, sigmas[i] * s_in, uncond, cond, p.cfg_scale,
                                                   p.s_min_uncond, image_conditioning)
            self.last_latent = denoised
            state.sampling_step = i  # the WebUI's sampler callback runs after the model call
            d = (x - denoised) / sigmas[i]
            x = x + d * (sigmas[i + 1] - sigmas[i])
        return x

    def sample(self, p, x, conditioning, unconditional_conditioning, image_conditioning):
        self._initialize(p)
        sigmas = full_sigmas(p.steps)
        return self._launch(p.steps, lambda: self._euler(p, x * sigmas[0], sigmas, conditioning,
                                                         unconditional_conditioning, image_conditioning))

    def sample_img2img(self, p, x, noise, conditioning, unconditional_conditioning, steps, image_conditioning):
        self._initialize(p)
        t_enc = int(min(p.denoising_strength, 0.999) * steps)
        sigmas = full_sigmas(steps)[steps - t_enc - 1:]
        xi = x + noise * sigmas[0]
        return self._launch(t_enc + 1, lambda: self._euler(p, xi, sigmas, conditioning,
                                                           unconditional_conditioning, image_conditioning))


def create_sampler(name: str, model) -> Sampler:
    return Sampler(name)
