"""Where ComfyUI calls each adapter layer: the attention-patch key of every cross-attention layer.

ComfyUI's UNet names the block it is in as `transformer_options["block"]` = ("input", id),
("middle", 0) or ("output", id), and each transformer block of a SpatialTransformer by its
`block_index` (0 .. depth-1). An attn2 replace patch is looked up by (name, id, block_index) first,
then by (name, id). The adapter stores its layers input blocks, output blocks, middle block
(`wplus.branch.layers`), so layer i is the i-th of those places in that order:

    SD1.5: input 1, 2, 4, 5, 7, 8 -> layers 0-5; output 3-11 -> 6-14; middle -> 15
    SDXL:  input 4, 5 (2 each), 7, 8 (10 each) -> 0-23; output 0-2 (10 each), 3-5 (2 each) -> 24-59;
           middle (10) -> 60-69
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from wplus.branch.layers import cross_attention_layers

#: ComfyUI's block names, with the UNet containers they stand for.
BLOCKS = (("input", "input_blocks"), ("middle", "middle_block"), ("output", "output_blocks"))


@dataclass(frozen=True)
class LayerPlace:
    """One cross-attention layer as ComfyUI sees it."""

    block: str  # "input" | "middle" | "output"
    number: int  # index in input_blocks / output_blocks; 0 for the middle block
    index: int  # block_index: the transformer block inside the SpatialTransformer
    depth: int  # transformer blocks in that SpatialTransformer

    @property
    def key(self) -> tuple:
        """The patch key: (block, number) where the place is unambiguous (depth 1, as ComfyUI_IPAdapter_plus
        keys SD1.5), else (block, number, index) (as it keys SDXL)."""
        return (self.block, self.number) if self.depth == 1 else (self.block, self.number, self.index)


def layer_places(diffusion_model: nn.Module) -> list[LayerPlace]:
    """The place of every adapter layer, in adapter order; raises if the UNet is not ldm/sgm-shaped."""
    found: dict[int, LayerPlace] = {}
    for name, attr in BLOCKS:
        container = getattr(diffusion_model, attr, None)
        if container is None:
            continue
        blocks = [container] if name == "middle" else list(container)
        for number, block in enumerate(blocks):
            attns = [m.attn2 for m in block.modules() if isinstance(getattr(m, "attn1", None), nn.Module)
                     and isinstance(getattr(m, "attn2", None), nn.Module)]
            for index, attn in enumerate(attns):
                found[id(attn)] = LayerPlace(name, number, index, len(attns))
    places = [found.get(id(attn)) for attn in cross_attention_layers(diffusion_model)]
    if not places or None in places:
        raise TypeError(f"{type(diffusion_model).__name__} is not a UNet with input/middle/output blocks; "
                        "the W+ nodes support SD1.x, SD2.x and SDXL models")
    return places
