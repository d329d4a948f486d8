"""Stand-in for ComfyUI's attention: the kernel, and the transformer block's attn2 replace lookup,
run on an ldm (A1111) SpatialTransformer's own weights."""
from __future__ import annotations

import torch.nn.functional as F


def optimized_attention(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
                        skip_output_reshape=False, **kwargs):
    options = kwargs.get("transformer_options")
    if options is not None and "optimized_attention_override" in options and "_inside" not in kwargs:
        return options["optimized_attention_override"](optimized_attention, q, k, v, heads, mask=mask,
                                                        attn_precision=attn_precision, _inside=True)
    b, _, inner = q.shape
    d = inner // heads
    q, k, v = (t.reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, -1, heads * d)


#: Every call of a replace patch: (block, block_index, transformer_index) — the order ComfyUI calls layers.
CALLS: list[tuple] = []


def transformer_block(block, x, context, transformer_options: dict):
    """ComfyUI's BasicTransformerBlock.forward on an ldm BasicTransformerBlock (attn1, attn2, norms, ff);
    attn1 runs as ldm's (W+ never patches it)."""
    extra_options = {k: v for k, v in transformer_options.items() if k not in ("patches", "patches_replace")}
    heads = block.attn2.heads
    extra_options.update(n_heads=heads, dim_head=block.attn2.to_q.out_features // heads, attn_precision=None)
    where = transformer_options.get("block")
    full = (where[0], where[1], transformer_options.get("block_index", 0)) if where is not None else None
    x = block.attn1(block.norm1(x)) + x
    n = block.norm2(x)
    replace = transformer_options.get("patches_replace", {}).get("attn2", {})
    key = full if full in replace else where
    if key in replace:
        CALLS.append((where, full[2], transformer_options.get("transformer_index")))
        q, k, v = block.attn2.to_q(n), block.attn2.to_k(context), block.attn2.to_v(context)
        n = block.attn2.to_out(replace[key](q, k, v, extra_options))
    else:  # ComfyUI's CrossAttention.forward: the same kernel as the patches get
        q, k, v = block.attn2.to_q(n), block.attn2.to_k(context), block.attn2.to_v(context)
        n = block.attn2.to_out(optimized_attention(q, k, v, heads, transformer_options=transformer_options))
    x = n + x
    return block.ff(block.norm3(x)) + x


def spatial_transformer(layer, x, context, transformer_options: dict):
    """ComfyUI's SpatialTransformer.forward: sets activations_shape and block_index per transformer block."""
    b, c, h, w = x.shape
    transformer_options["activations_shape"] = list(x.shape)
    x_in = x
    x = layer.norm(x)
    if not layer.use_linear:
        x = layer.proj_in(x)
    x = x.movedim(1, 3).flatten(1, 2).contiguous()
    if layer.use_linear:
        x = layer.proj_in(x)
    for i, block in enumerate(layer.transformer_blocks):
        transformer_options["block_index"] = i
        x = transformer_block(block, x, context, transformer_options)
    if layer.use_linear:
        x = layer.proj_out(x)
    x = x.reshape(b, h, w, x.shape[-1]).movedim(3, 1).contiguous()
    if not layer.use_linear:
        x = layer.proj_out(x)
    return x + x_in
