"""A loaded checkpoint the way Forge holds it: the real UNet inside `forge_objects.unet` (a patcher),
with the copies Forge resets it from; no `sd_model.model.diffusion_model` (see ../README.md)."""
from __future__ import annotations

import types

import torch
from backend.patcher import ForgeObjects, KModel, UnetPatcher
from torch import nn

from modules import prompt_parser


class FakeSDModel(nn.Module):
    def __init__(self, unet: nn.Module, context_dim: int, *, name: str = "tiny-sd15", kind: str = "sd1",
                 cond_stage_key: str = "txt", computation_dtype: torch.dtype = torch.float32,
                 max_rows: int | None = None):
        super().__init__()
        self.kmodel = KModel(unet, computation_dtype)
        self.forge_objects = ForgeObjects(UnetPatcher(self.kmodel, max_rows=max_rows))
        self.forge_objects_original = self.forge_objects.shallow_copy()
        self.forge_objects_after_applying_lora = self.forge_objects.shallow_copy()
        self.context_dim = context_dim
        self.cond_stage_key = cond_stage_key
        self.is_sd1, self.is_sd2, self.is_sdxl, self.is_sd3 = kind == "sd1", kind == "sd2", kind == "sdxl", False
        self.latent_channels = 4
        self.sd_model_hash = f"{abs(hash(name)) % 16**10:010x}"
        self.sd_checkpoint_info = types.SimpleNamespace(name=name, name_for_extra=name, short_title=name,
                                                        title=name, shorthash=self.sd_model_hash)
        self.cond_stage_model_empty_prompt = prompt_parser.encode("", context_dim)[:77]

    def set_max_rows(self, rows: int | None) -> None:
        """The rows Forge's memory planning lets one UNet call hold (low memory: one chunk per call)."""
        for objects in (self.forge_objects, self.forge_objects_original, self.forge_objects_after_applying_lora):
            objects.unet.max_rows = rows
