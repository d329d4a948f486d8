"""Find a UNet's cross-attention layers by structure, in the order adapter weights are stored.

The official checkpoint stores one entry per diffusers attention processor: down blocks, then up
blocks, then the mid block. The ldm/sgm UNet names the same places input_blocks, output_blocks,
middle_block. A transformer block is any module with `attn1` and `attn2` children; its `attn2`
is the cross-attention layer. This works for ldm (SD1/SD2), sgm (SDXL) and diffusers alike.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from wplus.errors import IncompatibleModelError

# (down, up, mid) container names per runtime, in the adapter's storage order.
_ORDERS = (("input_blocks", "output_blocks", "middle_block"), ("down_blocks", "up_blocks", "mid_block"))

# Known families: (number of cross-attention layers, context width) -> name.
FAMILIES = {(16, 768): "sd1", (16, 1024): "sd2", (70, 2048): "sdxl"}
FAMILY_NAMES = {"sd1": "SD1.x", "sd2": "SD2.x", "sdxl": "SDXL", "custom": "a custom model"}


@dataclass(frozen=True)
class LayerSpec:
    """What the residual branch needs to know about one cross-attention layer."""

    query_dim: int  # the layer's inner width (to_q output = to_out input)
    context_dim: int  # to_k input width
    heads: int


def cross_attention_layers(unet: nn.Module) -> list[nn.Module]:
    """The UNet's cross-attention modules in adapter order; raises if the model has none."""
    for names in _ORDERS:
        if all(hasattr(unet, n) for n in names[:2]):
            layers = [m for n in names if getattr(unet, n, None) is not None for m in _attn2_in(getattr(unet, n))]
            if layers:
                return layers
    hint = " (a pipeline? pass its .unet)" if isinstance(getattr(unet, "unet", None), nn.Module) else ""
    raise IncompatibleModelError(
        f"{type(unet).__name__}{hint} has no cross-attention layers in input/output (down/up) blocks: the W+ "
        "adapter works with the UNet of SD1.x, SD2.x and SDXL models (the ldm/sgm UNetModel of the WebUI and "
        "Forge, or a diffusers UNet2DConditionModel)"
    )


def _attn2_in(container: nn.Module) -> list[nn.Module]:
    return [
        m.attn2
        for m in container.modules()
        if isinstance(getattr(m, "attn1", None), nn.Module) and isinstance(getattr(m, "attn2", None), nn.Module)
    ]


def layer_heads(attn: nn.Module) -> int:
    heads = getattr(attn, "heads", None)
    if not isinstance(heads, int):
        raise TypeError(f"{type(attn).__name__} does not expose its head count (.heads)")
    return heads


def layer_spec(attn: nn.Module) -> LayerSpec:
    return LayerSpec(attn.to_q.out_features, attn.to_k.in_features, layer_heads(attn))


def unet_family(specs: list[LayerSpec]) -> str:
    """'sd1' | 'sd2' | 'sdxl' | 'custom' from the layer count and the context width."""
    context = specs[0].context_dim if specs else 0
    return FAMILIES.get((len(specs), context), "custom")


def describe(family: str, specs: list[LayerSpec]) -> str:
    context = specs[0].context_dim if specs else 0
    return f"{FAMILY_NAMES.get(family, family)} ({len(specs)} cross-attention layers, context width {context})"
