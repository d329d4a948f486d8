"""Stand-in for ComfyUI's UNetModel._forward, walking an ldm (A1111) UNetModel's blocks."""
from __future__ import annotations

import torch
from ldm.modules.attention import SpatialTransformer
from ldm.modules.diffusionmodules.openaimodel import TimestepBlock
from ldm.modules.diffusionmodules.util import timestep_embedding

from comfy.ldm.modules.attention import spatial_transformer


def _embed_sequential(module, h, emb, context, transformer_options: dict):
    for layer in module:
        if isinstance(layer, TimestepBlock):
            h = layer(h, emb)
        elif isinstance(layer, SpatialTransformer):
            h = spatial_transformer(layer, h, context, transformer_options)
            transformer_options["transformer_index"] = transformer_options.get("transformer_index", 0) + 1
        else:
            h = layer(h)
    return h


def unet_forward(unet, x, timesteps, context, transformer_options: dict):
    transformer_options["original_shape"] = list(x.shape)
    transformer_options["transformer_index"] = 0
    emb = unet.time_embed(timestep_embedding(timesteps, unet.model_channels, repeat_only=False).to(x.dtype))
    hs, h = [], x
    for number, module in enumerate(unet.input_blocks):
        transformer_options["block"] = ("input", number)
        h = _embed_sequential(module, h, emb, context, transformer_options)
        hs.append(h)
    transformer_options["block"] = ("middle", 0)
    h = _embed_sequential(unet.middle_block, h, emb, context, transformer_options)
    for number, module in enumerate(unet.output_blocks):
        transformer_options["block"] = ("output", number)
        h = _embed_sequential(module, torch.cat([h, hs.pop()], dim=1), emb, context, transformer_options)
    return unet.out(h.type(x.dtype))
