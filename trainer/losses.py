"""The training objectives.

L_rec      the diffusion loss: MSE between the UNet's prediction and its target (the added noise,
           or the velocity for v-prediction models).
L_disen    MSE, outside the face, between the prediction with the true W+ and a no-grad prediction
           with a perturbed W+: changing the identity must not change the background.
L_preserve MSE between the prediction and a no-grad prediction with the branch off (λ=0): the
           adapter must keep the base model's behaviour where the identity does not matter.
Stage II loss = L_rec + λ_disen·L_disen + λ_preserve·L_preserve (paper: 2.0 and 1.0).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def diffusion_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction type {kind!r} (epsilon or v_prediction)")


def rec_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred.float(), target.float())


def outside_face(face_mask: torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
    """(B,1,H,W) face mask in [0,1] -> (B,1,h,w) weight of the background at latent size."""
    return 1.0 - F.interpolate(face_mask.float(), size=latent_hw, mode="bilinear", align_corners=False)


def disen_loss(pred: torch.Tensor, pred_perturbed: torch.Tensor, outside: torch.Tensor) -> torch.Tensor:
    """Mean over all latent elements (the face region contributes zeros), as the paper."""
    return F.mse_loss(pred.float() * outside, pred_perturbed.detach().float() * outside)


def preserve_loss(pred: torch.Tensor, pred_off: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred.float(), pred_off.detach().float())
