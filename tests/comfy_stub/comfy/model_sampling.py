"""Stand-in for ComfyUI's discrete (SD1.5) model sampling: sigmas, timesteps, percent_to_sigma."""
from __future__ import annotations

import torch


class ModelSamplingDiscrete:
    def __init__(self, linear_start: float = 0.00085, linear_end: float = 0.012, timesteps: int = 1000):
        betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2
        alphas = torch.cumprod(1.0 - betas, dim=0)
        self.sigmas = (((1 - alphas) / alphas) ** 0.5).float()
        self.log_sigmas = self.sigmas.log()

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        dists = sigma.log().reshape(-1, 1) - self.log_sigmas.reshape(1, -1)
        return dists.abs().argmin(dim=1).float().reshape(sigma.shape)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        t = torch.clamp(timestep.float(), 0, len(self.sigmas) - 1)
        low, high = t.floor().long(), t.ceil().long()
        w = t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return self.sigma(torch.tensor((1.0 - percent) * 999.0)).item()
