"""Adapter files: the official `wplus_adapter.bin` pickle and our `.safetensors` with metadata.

Both load into the same `WPlusAdapter`. Every failure is an `AdapterFormatError` whose message
says what the file is (or seems to be) and what to do, never a bare KeyError from deep inside.
`adapter_fingerprint` names the weights a file holds (the infotext's `Wplus adapter hash`).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from wplus.assets.atomic import atomic_path
from wplus.assets.fingerprint import stat_key
from wplus.assets.io import (
    SAFETENSORS,
    check_weights,
    existing_file,
    load_pickle,
    read_safetensors,
    safetensors_header,
    sniff,
)
from wplus.branch.adapter import WPlusAdapter
from wplus.branch.layers import FAMILY_NAMES, LayerSpec, unet_family
from wplus.errors import AdapterFormatError
from wplus.geometry import STYLE_DIM, TOKEN_GROUPS

FORMAT = "wplus-adapter"
FORMAT_VERSION = "1"
_OFFICIAL_KEY = re.compile(r"^(\d+)\.to_([qkv])_wplus\.weight$")
_OURS_KEY = re.compile(r"^layers\.(\d+)\.to_([qkv])_wplus\.weight$")
#: Largest feature width a layer may declare (SDXL's is 1280, its context 2048).
MAX_WIDTH = 16384
_KNOWN_OTHERS = {
    "image_proj": "an IP-Adapter file",
    "ip_adapter": "an IP-Adapter file",
    "state_dict": "a full model checkpoint (e4e or Stable Diffusion?)",
    "model.diffusion_model.input_blocks.0.0.weight": "a Stable Diffusion checkpoint",
}


def load_adapter(path: str | Path) -> WPlusAdapter:
    """Load the official .bin or our .safetensors (told apart by content); float32 on the CPU.

    Structure, dtypes (floating only), finiteness and every shape are checked against the
    architecture the file declares before anything is built."""
    path = existing_file(path, "W+ adapter", AdapterFormatError)
    state, specs, arch = _read(path)
    adapter = WPlusAdapter(specs, specs[0].context_dim, arch)
    adapter.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    adapter.source = str(path)
    return adapter


_FINGERPRINT = b"wplus-adapter-fingerprint/1\n"
_fingerprints: dict[tuple[str, int, int], str] = {}  # stat_key -> fingerprint, per process


def adapter_fingerprint(path: str | os.PathLike) -> str:
    """sha256 (hex) of the weights an adapter file holds, computed once per file version.

    Over every tensor in our layout's names, sorted (name, dtype, shape, bytes), and the metadata
    that changes what loads (the model family, `arch`), as JSON with sorted keys. The format's
    bookkeeping (format, version, widths and counts the shapes already give) and the container are
    left out, so two writes of the same weights, and the official `.bin` and our `.safetensors` of
    the same weights in the same dtype, have the same fingerprint; another dtype (fp16 of fp32
    weights) is other bytes and another fingerprint. Checked like `load_adapter`."""
    path = existing_file(path, "W+ adapter", AdapterFormatError)
    key = stat_key(path)
    if key not in _fingerprints:
        state, _specs, arch = _read(path)
        digest = hashlib.sha256(_FINGERPRINT)
        for name in sorted(state):
            tensor = state[name].detach().contiguous()
            digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode() + b"\n")
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        digest.update(json.dumps({"arch": arch}, sort_keys=True).encode())
        _fingerprints[key] = digest.hexdigest()
    return _fingerprints[key]


def _read(path: Path) -> tuple[dict[str, torch.Tensor], list[LayerSpec], str]:
    """(tensors under our layout's names as stored, layer specs, model family) of a checked file."""
    if sniff(path) == SAFETENSORS:
        proj, residual, meta = _read_safetensors(path)
    else:
        proj, residual, meta = _read_official(path)
    specs = _check_shapes({k: tuple(v.shape) for k, v in proj.items()},
                          {k: tuple(v.shape) for k, v in residual.items()}, path)
    arch = meta.get("arch")
    state = {f"proj.{k}": v for k, v in proj.items()}
    state.update({f"layers.{i}.to_{w}_wplus.weight": t for (i, w), t in residual.items()})
    return state, specs, arch if arch in FAMILY_NAMES else unet_family(specs)


def save_adapter(adapter: WPlusAdapter, path: str | Path, official: bool = False,
                 dtype: torch.dtype | None = None) -> Path:
    """Write our .safetensors (default) or the official .bin layout; `dtype` e.g. torch.float16."""
    path = Path(path)
    cast = (lambda t: t.detach().to("cpu", dtype or t.dtype).contiguous())
    if official:
        state = {k: {n: cast(t) for n, t in d.items()} for k, d in adapter.official_state_dict().items()}
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        return path
    tensors = {f"proj.{k}": cast(t) for k, t in adapter.proj.state_dict().items()}
    tensors.update({f"layers.{k}": cast(t) for k, t in adapter.layers.state_dict().items()})
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": adapter.arch,
        "context_dim": str(adapter.context_dim),
        "num_layers": str(len(adapter.layers)),
        "num_tokens": str(adapter.proj.num_tokens),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def _read_official(path: Path) -> tuple[dict, dict, dict]:
    state = load_pickle(path, "W+ adapter", AdapterFormatError)
    if not isinstance(state, dict) or not {"w_proj", "wplus_adapter"} <= set(state):
        raise AdapterFormatError(f"{path.name} is {_guess(state)}, not a W+ adapter "
                                 "(expected the keys 'w_proj' and 'wplus_adapter').")
    proj = check_weights(state["w_proj"], path.name, AdapterFormatError, prefix="w_proj.")
    residual = {}
    for key, tensor in check_weights(state["wplus_adapter"], path.name, AdapterFormatError,
                                     prefix="wplus_adapter.").items():
        m = _OFFICIAL_KEY.match(key)
        if m is None or int(m[1]) % 2 == 0:
            raise AdapterFormatError(f"{path.name}: unknown key 'wplus_adapter.{key}' — not a W+ adapter of a "
                                     "known version.")
        residual[((int(m[1]) - 1) // 2, m[2])] = tensor
    return proj, residual, {}


def _read_safetensors(path: Path) -> tuple[dict, dict, dict]:
    meta, info = safetensors_header(path, "W+ adapter", AdapterFormatError)
    keys = list(info)
    if meta.get("format") != FORMAT and not any(k.startswith("proj.proj_0") for k in keys):
        raise AdapterFormatError(f"{path.name} is {_guess(dict.fromkeys(keys))}, not a W+ adapter.")
    if meta.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise AdapterFormatError(f"{path.name} uses W+ adapter format {meta['format_version']}; "
                                 f"this version reads format {FORMAT_VERSION}. Update the extension.")
    proj, residual = {}, {}
    for key in keys:
        m = _OURS_KEY.match(key)
        if key.startswith("proj."):
            proj[key[5:]] = key
        elif m:
            residual[(int(m[1]), m[2])] = key
        else:
            raise AdapterFormatError(f"{path.name}: unknown key '{key}' — not a W+ adapter of a known version.")
    _check_shapes({k: info[v][1] for k, v in proj.items()}, {k: info[v][1] for k, v in residual.items()}, path)
    tensors = check_weights(read_safetensors(path, "W+ adapter", AdapterFormatError)[0], path.name,
                            AdapterFormatError)
    return ({k: tensors[v] for k, v in proj.items()}, {k: tensors[v] for k, v in residual.items()}, meta)


def _check_shapes(proj: dict[str, tuple], residual: dict[tuple, tuple], path: Path) -> list[LayerSpec]:
    """The layer specs the shapes declare, or an AdapterFormatError naming the first misfit."""
    expected = {f"proj_{i}.weight" for i in range(len(TOKEN_GROUPS))} | {"norm.weight", "norm.bias"}
    if set(proj) != expected:
        raise AdapterFormatError(f"{path.name}: projection keys {sorted(proj)} differ from {sorted(expected)}.")
    norm = proj["norm.weight"]
    if len(norm) != 1 or not 0 < norm[0] <= MAX_WIDTH:
        raise AdapterFormatError(f"{path.name}: the projection's norm.weight has shape {norm}; expected "
                                 f"(context width,) with a width of at most {MAX_WIDTH}.")
    context = norm[0]
    want = {"norm.weight": (context,), "norm.bias": (context,)}
    want.update({f"proj_{i}.weight": (context, (end - start) * STYLE_DIM)
                 for i, (start, end) in enumerate(TOKEN_GROUPS)})
    for key, shape in sorted(want.items()):
        if tuple(proj[key]) != shape:
            raise AdapterFormatError(f"{path.name}: projection '{key}' has shape {tuple(proj[key])}, expected "
                                     f"{shape} (W+ 18×{STYLE_DIM} to context width {context}).")
    count = 1 + max((i for i, _ in residual), default=-1)
    if count == 0 or len(residual) != 3 * count:
        raise AdapterFormatError(f"{path.name}: incomplete residual attention weights "
                                 f"({len(residual)} tensors for {count} layers; expected q, k, v each).")
    specs = []
    for i in range(count):
        q, k, v = (tuple(residual[(i, w)]) for w in "qkv")
        inner = q[0] if len(q) == 2 else -1
        if not 0 < inner <= MAX_WIDTH or q != (inner, inner) or k != (inner, context) or v != (inner, context):
            raise AdapterFormatError(f"{path.name}: layer {i} has shapes q{q} k{k} v{v}, inconsistent with "
                                     f"context width {context} (expected q (n,n), k and v (n,{context}), "
                                     f"n <= {MAX_WIDTH}).")
        specs.append(LayerSpec(inner, context, 0))
    return specs


def _guess(state: object) -> str:
    if isinstance(state, dict):
        for key, what in _KNOWN_OTHERS.items():
            if key in state:
                return what
        return f"a file with keys {sorted(map(str, state))[:5]}"
    return f"a {type(state).__name__} object"
