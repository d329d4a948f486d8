"""Attach the W+ residual branch to a loaded UNet with forward pre-hooks.

Only one thing about the host is assumed: each cross-attention module calls `to_out[0]` on its
pre-projection attention output `h`. A pre-hook there replaces `h` by `h + λ·r`, so the branch
composes with whatever attention kernel the host patched into `forward` (SDP, xformers,
sub-quadratic, diffusers processors...) and with hosts that replace the attention itself but keep
the output projection (Forge's attn2 replace patches). A pre-hook on the UNet itself picks, per
call, which identity-token row each batch row uses: consecutive rows of a per-step layout (hosts
that split the CFG batch into several UNet calls still line rows up), or, with `row_source`, rows
read from each call's own arguments (Forge's `transformer_options`).
"""
from __future__ import annotations

import math
import numbers
import os
from typing import Any, Callable, Sequence

import torch
from torch import nn

from wplus.assets.io import is_file, short
from wplus.branch.adapter import WPlusAdapter
from wplus.branch.layers import cross_attention_layers, describe, layer_heads, layer_spec, unet_family
from wplus.errors import AdapterFormatError, IncompatibleModelError, WPlusError

_ATTR = "_wplus_handle"


class AttachHandle:
    """A live attachment. Set `tokens` (or `set_bank` + `row_index`) and `scale`; `remove()` undoes it."""

    def __init__(self, unet: nn.Module, adapter: WPlusAdapter, cast: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 follow_dtype: bool = False) -> None:
        self.unet = unet
        self.adapter = adapter
        self._scale = 1.0
        self._row_index: tuple[int, ...] | None = None
        self.row_source: Callable[[int, dict], Sequence[int]] | None = None
        self.follow_dtype = follow_dtype
        self._attns = cross_attention_layers(unet)
        check_compatible(adapter, self._attns)
        ref = self._attns[0].to_out[0].weight
        if cast:
            target = torch.device(device) if device is not None else ref.device
            adapter.to(device=target, dtype=compute_dtype(target, dtype or ref.dtype))
        self._heads = [layer_heads(a) for a in self._attns]
        self._kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._bank_rows = 0
        self._failed: str | None = None  # why the last set_bank failed (the branch then refuses to run)
        self._cursor = 0
        self._selected: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._by_rows: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.seam = SeamStats(len(self._attns))
        self._hooks: list[Any] = []
        try:  # all or nothing: an interrupt (Ctrl+C) half-way must not leave hooks behind
            self._hooks.append(unet.register_forward_pre_hook(self._select_rows, with_kwargs=True))
            for i, attn in enumerate(self._attns):
                self._hooks.append(attn.to_out[0].register_forward_pre_hook(self._layer_hook(i)))
        except BaseException:
            self.remove()
            raise

    # -- λ ------------------------------------------------------------------------------------
    @property
    def scale(self) -> float:
        """λ, the weight of the identity branch (0 = the plain UNet, exactly)."""
        return self._scale

    @scale.setter
    def scale(self, value: float) -> None:
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise WPlusError(f"the W+ scale λ must be a number; got {type(value).__name__} {value!r:.40}")
        if not math.isfinite(value):
            raise WPlusError(f"the W+ scale λ must be a finite number; got {value}")
        self._scale = float(value)

    # -- tokens -------------------------------------------------------------------------------
    @property
    def tokens(self) -> None:
        raise AttributeError("tokens is write-only; the handle keeps their keys/values, not the tokens")

    @tokens.setter
    def tokens(self, tokens: torch.Tensor | None) -> None:
        """One token set per UNet batch row ((N,4,D)), or (1,4,D) for every row."""
        self.set_bank(tokens)
        self.row_index = None

    def set_bank(self, bank: torch.Tensor | None) -> None:
        """Compute each layer's keys/values for a few token sets once; `row_index` picks per row.

        A failed set leaves no identity behind: the previous tokens are dropped and every UNet call
        raises until tokens are set again (or None for none), so the branch never runs stale."""
        self.reset_rows()
        self._by_rows = {}
        self._kv, self._bank_rows, self._failed = None, 0, None
        if bank is None:
            return
        try:
            bank = self._checked(bank)
            self._kv = [layer.key_value(bank, h) for layer, h in zip(self.adapter.layers, self._heads)]
        except BaseException as exc:
            self._kv, self._failed = None, _why(exc)
            raise
        self._bank_rows = bank.shape[0]

    def set_bank_from(self, make: Callable[[], torch.Tensor]) -> None:
        """`set_bank(make())`, where a failure while computing the tokens (`make`, e.g. the adapter's
        projection) also drops the previous identity: the UNet then refuses to run, never runs stale."""
        try:
            bank = make()
        except BaseException as exc:
            self.set_bank(None)
            self._failed = _why(exc)
            raise
        self.set_bank(bank)

    def _checked(self, bank: torch.Tensor) -> torch.Tensor:
        shape = f"(N,{self.adapter.proj.num_tokens},{self.adapter.context_dim})"
        if not isinstance(bank, torch.Tensor):
            raise WPlusError(f"identity tokens must be a torch tensor {shape} (from adapter.project); "
                             f"got a {type(bank).__name__}")
        if bank.ndim != 3 or bank.shape[0] == 0 or tuple(bank.shape[1:]) != (self.adapter.proj.num_tokens,
                                                                              self.adapter.context_dim):
            raise WPlusError(f"identity tokens must be {shape}; got {tuple(bank.shape)}")
        if not torch.is_floating_point(bank) or not bool(torch.isfinite(bank).all()):
            raise WPlusError("identity tokens must be finite float values; got "
                             f"{'NaN or infinite values' if torch.is_floating_point(bank) else bank.dtype}")
        weight = self.adapter.proj.norm.weight
        return bank.to(device=weight.device, dtype=weight.dtype)

    @property
    def row_index(self) -> tuple[int, ...] | None:
        """Bank row of each row of the host's full batch (None: row i uses bank row i)."""
        return self._row_index

    @row_index.setter
    def row_index(self, index: torch.Tensor | list[int] | None) -> None:
        # Kept as plain ints: read on every UNet call, it must not sync a GPU tensor each time.
        if index is None:
            self._row_index = None
            return
        values = index.tolist() if isinstance(index, torch.Tensor) else list(index)
        if not values or min(values) < 0 or max(values) >= max(self._bank_rows, 1):
            raise WPlusError(f"row_index must pick rows of the {self._bank_rows}-row token bank; got {values}")
        self._row_index = tuple(int(i) for i in values)

    def reset_rows(self) -> None:
        """Start the next UNet call at row 0 of the layout (hosts call this at every sampler step)."""
        self._cursor = 0

    # -- hooks --------------------------------------------------------------------------------
    def _select_rows(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._selected = None
        if self._failed is not None:
            raise WPlusError(f"W+: the last identity tokens could not be set ({self._failed[:300]}), so the "
                             "previous identity is no longer used; set new tokens (or None for no identity) "
                             "before running the UNet.")
        if self._kv is None or self.scale == 0:
            return
        x = args[0] if args else kwargs.get("x", kwargs.get("sample"))
        n = x.shape[0]
        if self.row_source is None:
            rows = self._next_rows(n)
        else:
            rows = tuple(int(r) for r in self.row_source(n, kwargs))
            if len(rows) != n or min(rows) < 0 or max(rows) >= self._bank_rows:
                raise WPlusError(f"W+: the row source gave bank rows {list(rows)} for a UNet call of {n} rows "
                                 f"and a {self._bank_rows}-row token bank")
        self._selected = self._keys_values_for(rows)
        self.seam.unet_calls += 1

    def _next_rows(self, n: int) -> tuple[int, ...]:
        index = self._row_index if self._row_index is not None else tuple(range(self._bank_rows))
        if len(index) == 1:
            return index * n
        if self._row_index is None and self._cursor == 0 and len(index) % n:
            raise WPlusError(
                f"W+: identity tokens were given for {len(index)} rows but the UNet was called with {n} batch "
                "rows. Give one token set per batch row, or (1,4,D) for all rows."
            )
        if self._cursor + n > len(index):
            raise WPlusError(
                f"W+: the UNet was called with {n} batch rows but identity tokens were given for {len(index)} rows "
                f"({self._cursor} already used this step). Give one token set per row, or (1,4,D) for all rows."
            )
        rows = index[self._cursor : self._cursor + n]
        self._cursor = (self._cursor + n) % len(index)
        return rows

    def _keys_values_for(self, rows: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer K/V for these rows; the row layout rarely changes, so reuse it across steps."""
        cached = self._by_rows.get(rows)
        if cached is not None:
            return cached
        index = torch.tensor(rows, device=self._kv[0][0].device)
        selected = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self._kv]
        if not self._kv[0][0].requires_grad:  # training recomputes so each forward gets its own graph
            self._by_rows[rows] = selected
        return selected

    def _layer_hook(self, i: int):
        def hook(module: nn.Module, args: tuple) -> tuple | None:
            if self._selected is None:
                return None
            h = args[0]
            k, v = self._selected[i]
            if h.shape[0] != k.shape[0]:  # another extension changed the rows between UNet and layer
                self.seam.mismatched += 1
                return None
            self.seam.layer_calls += 1
            if k.device != h.device:  # hosts that move weights at call time (WebUI --lowvram)
                self._follow(h.device)
                k, v = self._selected[i]
            if self.follow_dtype and k.dtype != compute_dtype(h.device, h.dtype):
                self._follow(h.device, compute_dtype(h.device, h.dtype))  # Forge: fp8/GGUF weights, fp16 activations
                k, v = self._selected[i]
            out = self.adapter.layers[i](h.to(k.dtype), k, v, self.scale)
            return (out.to(h.dtype), *args[1:])

        return hook

    def _follow(self, device: torch.device, dtype: torch.dtype | None = None) -> None:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype or t.dtype)

        self.adapter.to(device=device, dtype=dtype)
        self._kv = [(move(k), move(v)) for k, v in self._kv]
        self._by_rows = {rows: [(move(k), move(v)) for k, v in kv] for rows, kv in self._by_rows.items()}
        self._selected = [(move(k), move(v)) for k, v in self._selected]

    # -- lifetime -----------------------------------------------------------------------------
    def remove(self) -> None:
        """Take every hook off; the UNet is exactly as before. Safe to call twice."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self._kv, self._selected, self._by_rows = None, None, {}
        if getattr(self.unet, _ATTR, None) is self:
            delattr(self.unet, _ATTR)

    @property
    def attached(self) -> bool:
        return bool(self._hooks)

    def __enter__(self) -> "AttachHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


class SeamStats:
    """What the branch saw since the last `take()`: UNet calls with the branch on, layer hooks that
    applied it, and layer calls whose rows did not match the UNet's (left without the branch).
    Another extension that replaces the attention without calling `to_out[0]`, or re-batches rows
    inside the UNet, hides the seam; these counts make that visible instead of silently wrong."""

    def __init__(self, layers: int) -> None:
        self.layers = layers
        self.unet_calls = self.layer_calls = self.mismatched = 0

    def take(self) -> tuple[int, int, int]:
        out = (self.unet_calls, self.layer_calls, self.mismatched)
        self.unet_calls = self.layer_calls = self.mismatched = 0
        return out

    def problem(self, unet_calls: int, layer_calls: int, mismatched: int) -> str | None:
        """A sentence for the user when the counts show the branch did not run where it should."""
        if mismatched:
            return (f"{mismatched} cross-attention call(s) had a batch layout other than the UNet's rows (another "
                    "extension re-batched them); the W+ branch was left out there")
        if unet_calls and layer_calls < unet_calls * self.layers:
            return (f"the W+ branch reached {layer_calls} of {unet_calls * self.layers} cross-attention layer calls: "
                    "another extension replaced the attention without its output projection (to_out), so W+ "
                    "could not apply there")
        return None


def attach(unet: nn.Module, adapter: WPlusAdapter | str | os.PathLike, cast: bool = True,
           device: torch.device | str | None = None, dtype: torch.dtype | None = None,
           follow_dtype: bool = False) -> AttachHandle:
    """Plug `adapter` into `unet` (replacing any earlier attachment).

    adapter: a `WPlusAdapter` (`wplus.load_adapter`), or the path of an adapter file, which is then
    loaded (`load_adapter`; a path that is no file is refused). Anything else, a model without
    cross-attention layers (`IncompatibleModelError`) or an adapter made for another model family
    is refused with a `WPlusError` that says what was given and what is supported.

    cast=True moves the adapter to the UNet's device and dtype (inference); `device` overrides the
    device for hosts whose UNet weights wait elsewhere between forwards (WebUI --medvram/--lowvram),
    `dtype` the weights' dtype for hosts that store them in another one than they compute in
    (Forge's fp8/GGUF weights). The trainer passes cast=False to keep fp32 master weights; the
    branch then computes in the adapter's dtype. Should the UNet's activations still arrive on
    another device, the branch follows them at the first call; with follow_dtype also their dtype
    (fp16 on a CPU still runs in fp32).
    """
    adapter = _as_adapter(adapter)
    if not isinstance(unet, nn.Module):
        raise IncompatibleModelError(f"wplus.attach: the model must be a UNet (a torch.nn.Module); got a "
                                     f"{type(unet).__name__}")
    detach_all(unet)
    handle = AttachHandle(unet, adapter, cast=cast, device=device, dtype=dtype, follow_dtype=follow_dtype)
    object.__setattr__(unet, _ATTR, handle)
    return handle


def attached_handle(unet: nn.Module | None) -> AttachHandle | None:
    """The live attachment on `unet`, if any."""
    return getattr(unet, _ATTR, None) if unet is not None else None


def detach_all(unet: nn.Module) -> bool:
    """Remove a stale attachment (e.g. after a crashed generation); True if one was there."""
    handle = getattr(unet, _ATTR, None)
    if handle is None:
        return False
    handle.remove()
    return True


def _as_adapter(adapter: object) -> WPlusAdapter:
    if isinstance(adapter, WPlusAdapter):
        return adapter
    if isinstance(adapter, (str, os.PathLike)):
        if not is_file(adapter):
            raise AdapterFormatError(
                f"wplus.attach: no adapter file at {short(os.fspath(adapter))!r}. Pass a WPlusAdapter "
                "(wplus.load_adapter(path)) or the path of an adapter file (our .safetensors or the official "
                "wplus_adapter.bin).")
        from wplus.branch.files import load_adapter

        return load_adapter(adapter).eval()
    raise WPlusError(f"wplus.attach: the adapter must be a WPlusAdapter (wplus.load_adapter(path)) or the path "
                     f"of an adapter file; got a {type(adapter).__name__}.")


def check_compatible(adapter: WPlusAdapter, attns: list[nn.Module]) -> None:
    """An IncompatibleModelError naming both model families unless the adapter fits these layers."""
    specs = [layer_spec(a) for a in attns]
    mine = [(s.query_dim, s.context_dim) for s in adapter.specs]
    theirs = [(s.query_dim, s.context_dim) for s in specs]
    if mine != theirs:
        raise IncompatibleModelError(
            f"This W+ adapter is for {adapter.describe()}, but the loaded model is "
            f"{describe(unet_family(specs), specs)}. Pick an adapter made for this model family, "
            "or switch to a checkpoint of the adapter's family."
        )


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def compute_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The dtype the branch computes in for activations of `dtype` on `device`."""
    # CPUs may lack fast fp16 kernels: run the branch in fp32 there and cast back.
    if device.type == "cpu" and dtype == torch.float16:
        return torch.float32
    return dtype
