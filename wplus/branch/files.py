"""Adapter files: the official `wplus_adapter.bin` pickle and our `.safetensors` with metadata.

Both load into the same `WPlusAdapter`. Every failure is an `AdapterFormatError` whose message
says what the file is (or seems to be) and what to do, never a bare KeyError from deep inside.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from wplus.assets.atomic import atomic_path
from wplus.assets.io import load_pickle
from wplus.branch.adapter import WPlusAdapter
from wplus.branch.layers import FAMILY_NAMES, LayerSpec
from wplus.errors import AdapterFormatError
from wplus.geometry import NUM_TOKENS

FORMAT = "wplus-adapter"
FORMAT_VERSION = "1"
_OFFICIAL_KEY = re.compile(r"^(\d+)\.to_([qkv])_wplus\.weight$")
_OURS_KEY = re.compile(r"^layers\.(\d+)\.to_([qkv])_wplus\.weight$")
_KNOWN_OTHERS = {
    "image_proj": "an IP-Adapter file",
    "ip_adapter": "an IP-Adapter file",
    "state_dict": "a full model checkpoint (e4e or Stable Diffusion?)",
    "model.diffusion_model.input_blocks.0.0.weight": "a Stable Diffusion checkpoint",
}


def load_adapter(path: str | Path) -> WPlusAdapter:
    """Load the official .bin or our .safetensors; float32 on the CPU until attached."""
    path = Path(path)
    if not path.is_file():
        raise AdapterFormatError(f"W+ adapter file not found: {path}")
    if path.suffix == ".safetensors":
        proj, residual, meta = _read_safetensors(path)
    else:
        proj, residual, meta = _read_official(path)
    adapter = _build(proj, residual, path, meta.get("arch"))
    adapter.source = str(path)
    return adapter


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
    try:
        state = load_pickle(path)
    except Exception as exc:  # pickle/zip errors come in many types
        raise AdapterFormatError(
            f"{path.name} is not a readable W+ adapter (corrupt or incomplete download?): {exc}. "
            "Delete it and download wplus_adapter.bin again."
        ) from exc
    if not isinstance(state, dict) or not {"w_proj", "wplus_adapter"} <= set(state):
        raise AdapterFormatError(f"{path.name} is {_guess(state)}, not a W+ adapter "
                                 "(expected the keys 'w_proj' and 'wplus_adapter').")
    residual = {}
    for key, tensor in state["wplus_adapter"].items():
        m = _OFFICIAL_KEY.match(key)
        if m is None or int(m[1]) % 2 == 0:
            raise AdapterFormatError(f"{path.name}: unknown key 'wplus_adapter.{key}' — not a W+ adapter of a "
                                     "known version.")
        residual[((int(m[1]) - 1) // 2, m[2])] = tensor
    return dict(state["w_proj"]), residual, {}


def _read_safetensors(path: Path) -> tuple[dict, dict, dict]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = list(f.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        raise AdapterFormatError(f"{path.name} is not a readable safetensors file (corrupt or truncated?): "
                                 f"{exc}") from exc
    if meta.get("format") != FORMAT and not any(k.startswith("proj.proj_0") for k in keys):
        raise AdapterFormatError(f"{path.name} is {_guess(dict.fromkeys(keys))}, not a W+ adapter.")
    if meta.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise AdapterFormatError(f"{path.name} uses W+ adapter format {meta['format_version']}; "
                                 f"this version reads format {FORMAT_VERSION}. Update the extension.")
    tensors = load_file(str(path))
    proj, residual = {}, {}
    for key, tensor in tensors.items():
        m = _OURS_KEY.match(key)
        if key.startswith("proj."):
            proj[key[5:]] = tensor
        elif m:
            residual[(int(m[1]), m[2])] = tensor
        else:
            raise AdapterFormatError(f"{path.name}: unknown key '{key}' — not a W+ adapter of a known version.")
    return proj, residual, meta


def _build(proj: dict, residual: dict, path: Path, arch: str | None) -> WPlusAdapter:
    expected = {f"proj_{i}.weight" for i in range(NUM_TOKENS)} | {"norm.weight", "norm.bias"}
    if set(proj) != expected:
        raise AdapterFormatError(f"{path.name}: projection keys {sorted(proj)} differ from {sorted(expected)}.")
    context = proj["norm.weight"].shape[0]
    specs = _layer_specs(residual, context, path)
    adapter = WPlusAdapter(specs, context, arch if arch in FAMILY_NAMES else None)
    state = {f"proj.{k}": v for k, v in proj.items()}
    state.update({f"layers.{i}.to_{w}_wplus.weight": t for (i, w), t in residual.items()})
    try:
        adapter.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        raise AdapterFormatError(f"{path.name}: tensor shapes do not form a W+ adapter: {exc}") from exc
    return adapter


def _layer_specs(residual: dict, context: int, path: Path) -> list[LayerSpec]:
    count = 1 + max((i for i, _ in residual), default=-1)
    if count == 0 or len(residual) != 3 * count:
        raise AdapterFormatError(f"{path.name}: incomplete residual attention weights "
                                 f"({len(residual)} tensors for {count} layers; expected q, k, v each).")
    specs = []
    for i in range(count):
        q, k, v = (residual[(i, w)] for w in "qkv")
        inner = q.shape[0]
        if q.shape != (inner, inner) or k.shape != (inner, context) or v.shape != (inner, context):
            raise AdapterFormatError(f"{path.name}: layer {i} has shapes q{tuple(q.shape)} k{tuple(k.shape)} "
                                     f"v{tuple(v.shape)}, inconsistent with context width {context}.")
        specs.append(LayerSpec(inner, context, 0))
    return specs


def _guess(state: object) -> str:
    if isinstance(state, dict):
        for key, what in _KNOWN_OTHERS.items():
            if key in state:
                return what
        return f"a file with keys {sorted(map(str, state))[:5]}"
    return f"a {type(state).__name__} object"
