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

from wplus.lazy import lazy_getattr

__version__ = "0.1.0"

_EXPORTS = {
    "WPlusAdapter": "wplus.branch.adapter",
    "WPlusProjection": "wplus.branch.projection",
    "load_adapter": "wplus.branch.files",
    "save_adapter": "wplus.branch.files",
    "AdapterFormatError": "wplus.errors",
    "WPlusError": "wplus.errors",
    "attach": "wplus.branch.hook",
    "detach_all": "wplus.branch.hook",
    "AttachHandle": "wplus.branch.hook",
    "detect_faces": "wplus.faces.detect",
    "prepare_reference": "wplus.faces.detect",
    "align_face": "wplus.faces.align",
    "load_e4e": "wplus.stylegan.e4e",
    "apply_edits": "wplus.stylegan.directions",
    "mix": "wplus.stylegan.directions",
    "DirectionLibrary": "wplus.stylegan.directions",
    "encode_reference": "wplus.identity.encoder",
    "load_identity": "wplus.identity.files",
    "save_identity": "wplus.identity.files",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr("wplus", _EXPORTS, globals())
