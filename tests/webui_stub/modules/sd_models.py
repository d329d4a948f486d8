"""A loaded "checkpoint" for the stand-in: the real UNet under `model.diffusion_model`, as in the
WebUI (`p.sd_model.model.diffusion_model`), with the attributes scripts read."""
from __future__ import annotations

import types

import torch
from torch import nn

from modules import prompt_parser


class DiffusionWrapper(nn.Module):
    def __init__(self, unet: nn.Module, conditioning_key: str = "crossattn"):
        super().__init__()
        self.diffusion_model = unet
        self.conditioning_key = conditioning_key

    def forward(self, x, t, c_crossattn, c_concat=None):
        # the tiny test UNets take 4 channels, so instruct-pix2pix's image channels are not concatenated
        return self.diffusion_model(x, t, context=torch.cat(c_crossattn, 1))


class FakeSDModel(nn.Module):
    def __init__(self, unet: nn.Module, context_dim: int, *, name: str = "tiny-sd15", kind: str = "sd1",
                 cond_stage_key: str = "txt"):
        super().__init__()
        self.model = DiffusionWrapper(unet)
        self.context_dim = context_dim
        self.cond_stage_key = cond_stage_key
        self.is_sd1, self.is_sd2, self.is_sdxl, self.is_sd3 = kind == "sd1", kind == "sd2", kind == "sdxl", False
        self.latent_channels = 4
        self.sd_model_hash = f"{abs(hash(name)) % 16**10:010x}"
        self.sd_checkpoint_info = types.SimpleNamespace(name=name, name_for_extra=name, short_title=name,
                                                        title=name, shorthash=self.sd_model_hash)
        self.cond_stage_model_empty_prompt = prompt_parser.encode("", context_dim)[:77]

    def apply_model(self, x, t, cond: dict) -> torch.Tensor:
        return self.model(x, t, c_crossattn=cond["c_crossattn"], c_concat=cond.get("c_concat"))
