"""Forge's UNet patcher and k-model, as far as the extension meets them (see ../README.md)."""
from __future__ import annotations

import copy

import torch
from torch import nn


class KModel(nn.Module):
    """Holds the UNet as `diffusion_model`; `apply_model` is the eps-prediction wrapper (a VP schedule
    stand-in) around it, with Forge's cast of the inputs to the computation dtype."""

    def __init__(self, diffusion_model: nn.Module, computation_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.computation_dtype = computation_dtype

    def apply_model(self, x, sigma, c_crossattn, transformer_options, control=None):
        c_in = 1.0 / (sigma ** 2 + 1.0).sqrt()
        t = (sigma * 50.0).clamp(0, 999)
        dtype = self.computation_dtype
        eps = self.diffusion_model((x * c_in[:, None, None, None]).to(dtype), t, context=c_crossattn.to(dtype),
                                   control=control, transformer_options=transformer_options).float()
        return x - eps * sigma[:, None, None, None]


class UnetPatcher:
    """`model` is shared by every clone; `model_options` (with `transformer_options`) is each clone's."""

    def __init__(self, model: KModel, load_device: torch.device | None = None, max_rows: int | None = None):
        self.model = model
        self.load_device = load_device or torch.device("cpu")
        self.model_options: dict = {"transformer_options": {}}
        self.max_rows = max_rows  # rows one UNet call may hold (Forge: from free memory); None = no limit

    def clone(self) -> "UnetPatcher":
        n = UnetPatcher(self.model, self.load_device, self.max_rows)
        n.model_options = copy.deepcopy(self.model_options)
        return n

    def memory_fits(self, rows: int) -> bool:
        return self.max_rows is None or rows <= self.max_rows


class ForgeObjects:
    def __init__(self, unet: UnetPatcher, clip=None, vae=None, clipvision=None):
        self.unet, self.clip, self.vae, self.clipvision = unet, clip, vae, clipvision

    def shallow_copy(self) -> "ForgeObjects":
        return ForgeObjects(self.unet, self.clip, self.vae, self.clipvision)
