"""Stand-in for ComfyUI's sampling: calc_cond_batch's one call with [uncond, cond] chunks, an Euler loop."""
from __future__ import annotations

import torch

from comfy.ldm.modules.diffusionmodules.openaimodel import unet_forward


class BaseModel:
    """What ModelPatcher.model is: the diffusion model and its sampling."""

    def __init__(self, diffusion_model, model_sampling):
        self.diffusion_model = diffusion_model
        self.model_sampling = model_sampling


def model_call(patcher, x, sigma: torch.Tensor, cond, uncond, sample_sigmas=None) -> tuple[torch.Tensor, ...]:
    """(eps_cond, eps_uncond) of one step: one UNet call, uncond chunk first (cond_or_uncond [1, 0])."""
    options = patcher.model_options["transformer_options"].copy()
    if sample_sigmas is not None:
        options["sample_sigmas"] = sample_sigmas
    n = x.shape[0]
    sigmas = sigma.reshape(1).expand(2 * n)
    options.update(cond_or_uncond=[1, 0], sigmas=sigmas)
    sampling = patcher.get_model_object("model_sampling")
    x_in = torch.cat([x, x]) / (sigmas.reshape(-1, 1, 1, 1) ** 2 + 1) ** 0.5
    eps = unet_forward(patcher.get_model_object("diffusion_model"), x_in, sampling.timestep(sigmas),
                       torch.cat([uncond, cond]), options)
    return eps[n:], eps[:n]


def karras_free_schedule(sampling, steps: int) -> torch.Tensor:
    """ComfyUI's 'normal' scheduler: evenly spaced timesteps, then 0."""
    ts = torch.linspace(999, 0, steps + 1)[:-1]
    return torch.cat([sampling.sigma(ts), torch.zeros(1)])


@torch.no_grad()
def sample(patcher, noise, cond, uncond, steps: int = 4, cfg: float = 5.0) -> torch.Tensor:
    sampling = patcher.get_model_object("model_sampling")
    sigmas = karras_free_schedule(sampling, steps)
    x = noise * sigmas[0]
    for i in range(steps):
        eps_c, eps_u = model_call(patcher, x, sigmas[i], cond, uncond, sigmas)
        eps = eps_u + cfg * (eps_c - eps_u)
        x = x + eps * (sigmas[i + 1] - sigmas[i])
    return x
