"""Build the fixture UNets (real ldm / diffusers classes) and their expected I/O, for several test files."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file
from torch import nn

from conftest import FIXTURES


@dataclass
class Reference:
    unet: nn.Module
    io: dict[str, torch.Tensor]
    run: Callable[[torch.Tensor], torch.Tensor]  # context -> eps for io["x"], io["timesteps"]
    adapter_path: Path

    @property
    def context(self) -> torch.Tensor:
        return torch.cat([self.io["text_cond"], self.io["text_uncond"]])


def _dir(variant: str) -> Path:
    return FIXTURES / f"reference_{variant}"


def _config(variant: str) -> dict:
    return json.loads((_dir(variant) / "config.json").read_text())


def ldm_config(variant: str) -> dict:
    return dict(_config(variant)["ldm_unet"])


def ldm_state(variant: str) -> dict[str, torch.Tensor]:
    """The fixture UNet's weights with the WebUI checkpoint prefix removed (ldm/sgm layout)."""
    state = load_file(str(_dir(variant) / "unet_ldm.safetensors"))
    return {k.removeprefix("model.diffusion_model."): v for k, v in state.items()}


def ldm_unet(variant: str = "sd15") -> Reference:
    """The real `ldm` UNetModel (what the WebUI runs for SD1/SD2) with the fixture weights."""
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    unet = UNetModel(**ldm_config(variant)).eval()
    unet.load_state_dict(ldm_state(variant), strict=True)
    io = load_file(str(_dir(variant) / "io.safetensors"))
    return Reference(unet, io, lambda ctx: unet(io["x"], io["timesteps"], context=ctx),
                     _dir(variant) / "wplus_adapter.bin")


def diffusers_unet(variant: str) -> Reference:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**_config(variant)["diffusers_unet"]).eval()
    unet.load_state_dict(load_file(str(_dir(variant) / "unet_diffusers.safetensors")), strict=True)
    io = load_file(str(_dir(variant) / "io.safetensors"))
    run = lambda ctx: unet(io["x"], io["timesteps"], encoder_hidden_states=ctx).sample
    return Reference(unet, io, run, _dir(variant) / "wplus_adapter.bin")


def sgm_shaped_unet() -> Reference:
    """A module tree shaped like sgm's SDXL UNetModel (per-level transformer depth), sgm-layout weights.

    sgm is not on PyPI; its UNet has the same module names as ldm's, with a transformer depth per
    level. We build ldm's UNet and give each SpatialTransformer the depth the checkpoint has.
    """
    from ldm.modules.attention import BasicTransformerBlock, SpatialTransformer
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    cfg = ldm_config("sdxl")
    cfg.pop("transformer_depth"), cfg.pop("spatial_transformer_attn_type", None)
    unet = UNetModel(**cfg, transformer_depth=1, image_size=8, use_spatial_transformer=True)
    state = ldm_state("sdxl")
    for name, module in unet.named_modules():
        if isinstance(module, SpatialTransformer):
            pattern = re.compile(rf"^{re.escape(name)}\.transformer_blocks\.(\d+)\.")
            depth = 1 + max(int(m[1]) for k in state if (m := pattern.match(k)))
            block = module.transformer_blocks[0]
            heads, width = block.attn1.heads, block.attn1.to_q.in_features
            module.transformer_blocks = nn.ModuleList(
                BasicTransformerBlock(width, heads, width // heads, context_dim=cfg["context_dim"])
                for _ in range(depth)
            )
    unet.load_state_dict(state, strict=True)
    unet.eval()
    io = load_file(str(_dir("sdxl") / "io.safetensors"))
    # ldm's SpatialTransformer indexes a context list per transformer block.
    run = lambda ctx: unet(io["x"], io["timesteps"], context=[ctx] * 3)
    return Reference(unet, io, run, _dir("sdxl") / "wplus_adapter.bin")


def tiny_diffusers_unet(block_out_channels: tuple[int, int] = (16, 32), context_dim: int = 8,
                        head_dim: int = 4) -> nn.Module:
    """A tiny random diffusers UNet of the SD1 layout (two cross-attention blocks), seed 0, eval mode."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=block_out_channels,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=context_dim, attention_head_dim=head_dim, norm_num_groups=8).eval()


def identity_tokens(adapter, io: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cond rows the identity of io['ids'], uncond rows the zero-W+ tokens (the WebUI's CFG order)."""
    ids = io["ids"].long()
    return torch.cat([adapter.project(io["wplus"][ids]), adapter.zero_tokens(len(ids))])


def hook_count(module: nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in module.modules())
