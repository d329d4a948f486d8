"""The W+ branch as a ComfyUI attn2 replace patch, on a ModelPatcher clone only.

ComfyUI computes q = to_q(n), k = to_k(context), v = to_v(context) of a cross-attention layer,
calls the patch registered for its place and applies `to_out` to the result. The patch returns
h + λ·r: h the layer's text attention (ComfyUI's `optimized_attention`, or whatever patch was
there before), r the residual identity attention of the core (`ResidualIdentityAttention`), so
the layer computes the paper's to_out(h + λr).

Composition. A patch already at a place (another `WPlusApply`, ComfyUI_IPAdapter_plus) is kept as
`inner` and computes h; a pack that finds ours there and calls `.add(callback, **kwargs)` (IPAdapter's
protocol: callback(out, q, k, v, extra_options, **kwargs) is added to the attention output while
sigma_end <= sigma <= sigma_start) gets its callbacks run on h before our branch. So both orders
give r computed from the text + image-prompt attention, never a hidden patch.

Memory. ComfyUI deep-copies `model_options` at every clone; a patch copies its chain, never the
adapter or the identity's keys/values (one `IdentityBranch` is shared by the copies). Keys and
values are computed once per (layer, dtype, device), in the activations' dtype (fp32 on a CPU for
fp16), not per step.
"""
from __future__ import annotations

import copy
import threading
from typing import Any, Callable

import torch
import torch.nn.functional as F

from wplus.branch.adapter import WPlusAdapter
from wplus.branch.hook import check_compatible, compute_dtype
from wplus.branch.layers import cross_attention_layers
from wplus.branch.rows import BANK_IDENTITY, forge_call_rows
from wplus.comfy.layers import LayerPlace, layer_places
from wplus.comfy.schedule import Window
from wplus.errors import WPlusError
from wplus.generation.schedule import token_bank

Attention = Callable[..., torch.Tensor]  # ComfyUI's optimized_attention(q, k, v, heads, ...)


class IdentityBranch:
    """One WPlusApply: adapter, identity tokens, λ, window and mask, shared by every layer's patch."""

    def __init__(self, adapter: WPlusAdapter, codes: torch.Tensor, weight: float, window: Window,
                 mask: torch.Tensor | None = None) -> None:
        self.adapter = adapter
        self.bank = token_bank(adapter, codes.float()).detach()
        self.identities = self.bank.shape[0] - 1
        self.weight = float(weight)
        self.window = window
        self.mask = None if mask is None else _as_mask(mask)
        self._layers: dict[tuple, tuple[torch.nn.Module, torch.Tensor, torch.Tensor]] = {}
        self._rows: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._masks: dict[tuple, torch.Tensor] = {}
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict) -> "IdentityBranch":
        return self  # immutable for the patches; its caches are safe to share

    def apply(self, h: torch.Tensor, layer: int, extra_options: dict[str, Any]) -> torch.Tensor:
        """h + λ·r for this layer, or h itself outside start_at/end_at."""
        if not self.window.active(extra_options):
            return h
        dtype = compute_dtype(h.device, h.dtype)
        rows = self.call_rows(h.shape[0], extra_options)
        module, key, value = self._keys_values(layer, rows, h.device, dtype, int(extra_options["n_heads"]))
        scale: float | torch.Tensor = self.weight
        if self.mask is not None:
            scale = self.weight * self._mask_tokens(h.shape[1], extra_options, h.device, dtype)
        return module(h.to(dtype), key, value, scale).to(h.dtype)

    def call_rows(self, n_rows: int, extra_options: dict[str, Any]) -> tuple[int, ...]:
        """Bank row of each row of this call: cond rows their image's identity, the others the zero W+."""
        kinds = forge_call_rows(n_rows, {"transformer_options": extra_options})
        size = n_rows // len(extra_options["cond_or_uncond"])
        if self.identities not in (1, size):
            raise WPlusError(f"W+: {self.identities} identities for a batch of {size} images: give one identity, "
                             "or one per image")
        return tuple((i % size if self.identities > 1 else 0) if kind == BANK_IDENTITY else self.identities
                     for i, kind in enumerate(kinds))

    def _keys_values(self, layer: int, rows: tuple[int, ...], device: torch.device, dtype: torch.dtype,
                     heads: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
        where = (layer, dtype, device)
        with self._lock:
            if where not in self._layers:
                module = copy.deepcopy(self.adapter.layers[layer]).to(device=device, dtype=dtype).eval()
                with torch.no_grad():
                    k, v = module.key_value(self.bank.to(device=device, dtype=dtype), heads)
                self._layers[where] = (module, k, v)
            module, k, v = self._layers[where]
            picked = self._rows.get((where, rows))
            if picked is None:
                index = torch.tensor(rows, device=device)
                picked = self._rows[(where, rows)] = (k.index_select(0, index), v.index_select(0, index))
        return (module, *picked)

    def _mask_tokens(self, length: int, extra_options: dict[str, Any], device: torch.device,
                     dtype: torch.dtype) -> torch.Tensor:
        """(1,L,1): the mask resized to this layer's token grid."""
        grid = _token_grid(length, extra_options)
        with self._lock:
            cached = self._masks.get((grid, device, dtype))
            if cached is None:
                resized = F.interpolate(self.mask[None, None], size=grid, mode="bilinear", align_corners=False)
                cached = self._masks[(grid, device, dtype)] = resized.reshape(1, -1, 1).to(device, dtype)
        return cached


def _as_mask(mask: torch.Tensor) -> torch.Tensor:
    """ComfyUI's MASK ((H,W) or (B,H,W), 1 = the identity's region) -> (H,W) float32 on the CPU."""
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3) or 0 in mask.shape:
        raise WPlusError(f"W+: attn_mask must be a MASK (H,W) or (B,H,W); got {getattr(mask, 'shape', mask)!r}")
    return (mask[0] if mask.ndim == 3 else mask).detach().float().cpu().clamp(0, 1)


def _token_grid(length: int, extra_options: dict[str, Any]) -> tuple[int, int]:
    """(h, w) of this layer's tokens: the SpatialTransformer's input, else the latent scaled down."""
    shape = extra_options.get("activations_shape")
    if shape is not None and shape[-2] * shape[-1] == length:
        return int(shape[-2]), int(shape[-1])
    _, _, height, width = extra_options["original_shape"]
    for down in (1, 2, 4, 8, 16, 32, 64):
        h, w = -(-height // down), -(-width // down)
        if h * w == length:
            return h, w
    raise WPlusError(f"W+: cannot place the attn_mask on a layer of {length} tokens (latent {height}x{width})")


class WPlusAttentionPatch:
    """ComfyUI attn2 replace patch of one place: inner attention (+ added callbacks) + the W+ branch."""

    def __init__(self, branch: IdentityBranch, layer: int, attention: Attention, inner: Any = None) -> None:
        self.branch = branch
        self.layer = layer
        self.attention = attention
        self.inner = inner
        self.callbacks: list[Callable] = []
        self.kwargs: list[dict] = []

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        if self.inner is not None:
            h = self.inner(q, k, v, extra_options)
        else:
            h = self.attention(q, k, v, extra_options["n_heads"], attn_precision=extra_options.get("attn_precision"),
                               transformer_options=extra_options)
        if self.callbacks:
            h = self._run_callbacks(h, q, k, v, extra_options)
        return self.branch.apply(h, self.layer, extra_options)

    def add(self, callback: Callable, **kwargs: Any) -> None:
        """ComfyUI_IPAdapter_plus's protocol, for a pack applied after ours at the same place."""
        self.callbacks.append(callback)
        self.kwargs.append(kwargs)

    def _run_callbacks(self, h, q, k, v, extra_options: dict) -> torch.Tensor:
        sigmas = extra_options.get("sigmas")
        sigma = float(sigmas.reshape(-1)[0]) if sigmas is not None else float("inf")
        out = h
        for callback, kwargs in zip(self.callbacks, self.kwargs):
            if kwargs.get("sigma_end", 0.0) <= sigma <= kwargs.get("sigma_start", float("inf")):
                out = out + callback(out, q, k, v, extra_options, **kwargs)
        return out.to(h.dtype)

    def to(self, *args: Any, **kwargs: Any) -> "WPlusAttentionPatch":
        """ComfyUI moves patches to the sampling device; ours follow the activations, the inner may not."""
        if hasattr(self.inner, "to"):
            self.inner = self.inner.to(*args, **kwargs)
        return self

    def __deepcopy__(self, memo: dict) -> "WPlusAttentionPatch":
        twin = WPlusAttentionPatch(self.branch, self.layer, self.attention, copy.deepcopy(self.inner, memo))
        twin.callbacks = list(self.callbacks)
        twin.kwargs = copy.deepcopy(self.kwargs, memo)
        return twin


def comfy_attention() -> Attention:
    """ComfyUI's attention kernel (imported here, never at module import: tests use a stand-in)."""
    from comfy.ldm.modules.attention import optimized_attention

    return optimized_attention


def apply_identity(model: Any, adapter: WPlusAdapter, codes: torch.Tensor, weight: float, start_at: float,
                   end_at: float, mask: torch.Tensor | None = None) -> Any:
    """A clone of the ModelPatcher `model` with the W+ branch patched into every cross-attention.

    Weight 0 returns a plain clone (the model exactly as it was). Existing attn2 replace patches
    are chained, never overwritten."""
    if not 0.0 <= start_at <= end_at <= 1.0:
        raise WPlusError(f"W+: start_at and end_at must satisfy 0 <= start_at <= end_at <= 1; got {start_at}, {end_at}")
    clone = model.clone()
    if weight == 0:
        return clone
    unet = clone.get_model_object("diffusion_model")
    check_compatible(adapter, cross_attention_layers(unet))
    sampling = clone.get_model_object("model_sampling")
    window = Window(start_at, float(sampling.percent_to_sigma(start_at)), float(sampling.percent_to_sigma(end_at)))
    branch = IdentityBranch(adapter, codes, weight, window, mask)
    attention = comfy_attention()
    existing = clone.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
    for layer, place in enumerate(layer_places(unet)):
        key, inner = _target(existing, place)
        clone.set_model_attn2_replace(WPlusAttentionPatch(branch, layer, attention, inner), *key)
    return clone


def _target(patches: dict, place: LayerPlace) -> tuple[tuple, Any]:
    """Where ours goes and the patch ComfyUI would call there now (which ours then wraps): a key
    (block, number, index) already taken wins over (block, number), as in ComfyUI's lookup."""
    full, short = (place.block, place.number, place.index), (place.block, place.number)
    if full in patches:
        return full, patches[full]
    return place.key, patches.get(short)
