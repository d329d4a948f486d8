"""How a host's user configured identity and adapter resolution: models folder, face backend,
cache, e4e unloading, downloads. The WebUI shows `SPECS` in its Settings tab (section "W+ Adapter");
the command line and the ComfyUI nodes build `Settings` from their own inputs."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

SECTION = ("wplus", "W+ Adapter")
FACE_BACKENDS = ("auto", "facexlib", "dlib")


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
                "auto = facexlib when its weights are available, else dlib (offline)", FACE_BACKENDS),
    SettingSpec("wplus_cache_size", 32, "Encoded identities kept in memory", "number",
                "the same photo is never encoded twice while it is in the cache", minimum=0, maximum=1024),
    SettingSpec("wplus_unload_encoder", True, "Unload the e4e encoder after use", "checkbox",
                "frees about 1 GB of (V)RAM before sampling; keep it loaded to encode many photos faster"),
    SettingSpec("wplus_auto_download", True, "Download missing W+ weights automatically", "checkbox",
                "adapter, e4e and edit directions from the paper's release, with progress in the console"),
)
SPEC: dict[str, SettingSpec] = {s.key: s for s in SPECS}


def _default(key: str) -> Any:
    return SPEC[key].default


@dataclass(frozen=True)
class Settings:
    models_dir: Path
    face_backend: str = _default("wplus_face_backend")
    cache_size: int = _default("wplus_cache_size")
    unload_encoder: bool = _default("wplus_unload_encoder")
    auto_download: bool = _default("wplus_auto_download")
    downloads_off: str = "downloads are turned off"  # what turned them off, in the host's words

    @classmethod
    def from_getter(cls, get: Callable[[str, Any], Any], default_models_dir: Path, **extra: Any) -> "Settings":
        """`get(key, default)` reads one setting (e.g. from the WebUI's `shared.opts`)."""
        def value(key: str) -> Any:
            return get(key, _default(key))

        folder = str(value("wplus_models_dir") or "").strip()
        backend = str(value("wplus_face_backend") or "")
        return cls(
            models_dir=Path(os.path.expanduser(folder)) if folder else default_models_dir,
            face_backend=backend if backend in FACE_BACKENDS else _default("wplus_face_backend"),
            cache_size=max(0, int(value("wplus_cache_size") or 0)),
            unload_encoder=bool(value("wplus_unload_encoder")),
            auto_download=bool(value("wplus_auto_download")),
            **extra,
        )

    def download_blocker(self) -> str:
        """Why a missing file is not downloaded ("" when downloads are allowed), naming the cause."""
        from wplus.assets.download import offline_variable

        if not self.auto_download:
            return self.downloads_off
        variable = offline_variable()
        return f"the environment variable {variable} is set" if variable else ""
