"""sd-webui-wplus core: the W+ adapter, host-agnostic (no WebUI imports).

Public API (lazy, so `import wplus` stays cheap and optional backends load only when used):

    adapter = wplus.load_adapter(path)         # official .bin or our .safetensors
    tokens = adapter.project(wplus_codes)      # (B,18,512) -> (B,4,D)
    with wplus.attach(unet, adapter) as handle:
        handle.tokens = tokens; handle.scale = 0.6
        unet(x, t, context)

    faces = wplus.detect_faces(image, backend="dlib")
    aligned = wplus.align_face(image, faces[0], size=512)
    e4e = wplus.load_e4e(path_or_checkpoint_dict); w = e4e.encode(batch); img = e4e.render(w)
    w_edit = wplus.apply_edits(w, {"smile": 2.0})
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "WPlusAdapter": "wplus.adapter",
    "WPlusProjection": "wplus.projection",
    "load_adapter": "wplus.weights",
    "save_adapter": "wplus.weights",
    "AdapterFormatError": "wplus.errors",
    "WPlusError": "wplus.errors",
    "attach": "wplus.hook",
    "detach_all": "wplus.hook",
    "AttachHandle": "wplus.hook",
    "detect_faces": "wplus.faces",
    "prepare_reference": "wplus.faces",
    "align_face": "wplus.align",
    "load_e4e": "wplus.e4e",
    "apply_edits": "wplus.directions",
    "mix": "wplus.directions",
    "DirectionLibrary": "wplus.directions",
    "encode_reference": "wplus.identity",
    "load_identity": "wplus.identity",
    "save_identity": "wplus.identity",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        if importlib.util.find_spec(f"wplus.{name}") is None:
            raise AttributeError(f"module 'wplus' has no attribute {name!r}")
        return importlib.import_module(f"wplus.{name}")  # submodule access, e.g. wplus.layers
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
