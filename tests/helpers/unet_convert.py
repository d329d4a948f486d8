"""Rename a diffusers `UNet2DConditionModel` state dict to the ldm/sgm `UNetModel` layout (the one a
WebUI checkpoint stores under `model.diffusion_model.`), so a UNet trained or built with diffusers
can be run, with the same weights, by the WebUI's runtime. Pure key renaming; no tensor changes.

Block arithmetic (L = layers_per_block): down block i, layer j -> input_blocks[1 + i(L+1) + j]
(.0 resnet, .1 transformer); its downsampler -> input_blocks[(i+1)(L+1)].0.op; up block i, layer j
-> output_blocks[i(L+1) + j]; its upsampler sits in the block's last layer after the resnet (and
the transformer if any); the mid block is middle_block.0/.1/.2.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_TOP = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
        "add_embedding.linear_2": "label_emb.0.2", "conv_norm_out": "out.0", "conv_out": "out.2"}


def diffusers_to_ldm_unet(state: Mapping[str, torch.Tensor], config: Mapping, prefix: str = ""
                          ) -> dict[str, torch.Tensor]:
    """diffusers UNet keys -> ldm/sgm UNetModel keys (with `prefix`, e.g. 'model.diffusion_model.').

    `config` is the diffusers UNet config (`unet.config`): layers_per_block and up_block_types.
    """
    layers = config["layers_per_block"]
    if not isinstance(layers, int):
        raise ValueError("per-block layers_per_block lists are not supported by the ldm layout")
    up_has_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    out = {}
    for key, tensor in state.items():
        new = _rename(key, layers, up_has_attn)
        if new in out:
            raise ValueError(f"two diffusers keys map to {new}")
        out[prefix + new] = tensor
    return out


def _rename(key: str, L: int, up_has_attn: list[bool]) -> str:
    for src, dst in _TOP.items():
        if key.startswith(src + "."):
            return dst + key[len(src):]
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        return f"input_blocks.{1 + i * (L + 1) + j}.{_part(kind, rest)}"
    m = re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key)
    if m:
        return f"input_blocks.{(int(m[1]) + 1) * (L + 1)}.0.op.{m[2]}"
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        return f"output_blocks.{i * (L + 1) + j}.{_part(kind, rest)}"
    m = re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key)
    if m:
        i = int(m[1])
        return f"output_blocks.{i * (L + 1) + L}.{2 if up_has_attn[i] else 1}.conv.{m[2]}"
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if m:
        kind, j, rest = m[1], int(m[2]), m[3]
        index = 1 if kind == "attentions" else 2 * j
        return f"middle_block.{index}.{_part(kind, rest, with_index=False)}"
    raise ValueError(f"unknown diffusers UNet key {key!r}")


def _part(kind: str, rest: str, with_index: bool = True) -> str:
    if kind == "attentions":
        return ("1." if with_index else "") + rest
    name, _, tail = rest.partition(".")
    if name not in _RESNET:
        raise ValueError(f"unknown resnet parameter {rest!r}")
    return ("0." if with_index else "") + f"{_RESNET[name]}.{tail}"
