"""The extension's settings (Settings tab, section "W+ Adapter"), described without the WebUI so
the same list builds the WebUI options and is readable in tests."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

SECTION = ("wplus", "W+ Adapter")


@dataclass(frozen=True)
class SettingSpec:
    key: str
    default: Any
    label: str
    kind: str  # "text", "radio", "number", "checkbox"
    info: str = ""
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None


SPECS: tuple[SettingSpec, ...] = (
    SettingSpec("wplus_models_dir", "", "W+ models folder", "text",
                "adapter, e4e, directions and identities; empty = the extension's models/ folder"),
    SettingSpec("wplus_face_backend", "auto", "Face detection backend", "radio",
                "auto = facexlib when its weights are available, else dlib (offline)", ("auto", "facexlib", "dlib")),
    SettingSpec("wplus_cache_size", 32, "Encoded identities kept in memory", "number",
                "the same photo is never encoded twice while it is in the cache", minimum=0, maximum=1024),
    SettingSpec("wplus_unload_encoder", True, "Unload the e4e encoder after use", "checkbox",
                "frees about 1 GB of (V)RAM before sampling; keep it loaded to encode many photos faster"),
    SettingSpec("wplus_auto_download", True, "Download missing W+ weights automatically", "checkbox",
                "adapter, e4e and edit directions from the paper's release, with progress in the console"),
)


@dataclass(frozen=True)
class ExtensionSettings:
    models_dir: Path
    face_backend: str = "auto"
    cache_size: int = 32
    unload_encoder: bool = True
    auto_download: bool = True

    @classmethod
    def from_getter(cls, get: Callable[[str, Any], Any], default_models_dir: Path) -> "ExtensionSettings":
        """`get(key, default)` reads one option (e.g. from the WebUI's `shared.opts`)."""
        folder = str(get("wplus_models_dir", "") or "").strip()
        backend = str(get("wplus_face_backend", "auto") or "auto")
        return cls(
            models_dir=Path(os.path.expanduser(folder)) if folder else default_models_dir,
            face_backend=backend if backend in ("auto", "facexlib", "dlib") else "auto",
            cache_size=max(0, int(get("wplus_cache_size", 32) or 0)),
            unload_encoder=bool(get("wplus_unload_encoder", True)),
            auto_download=bool(get("wplus_auto_download", True)),
        )
