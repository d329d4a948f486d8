"""The extension's settings (Settings tab, section "W+ Adapter"), described without the WebUI so
the same list builds the WebUI options and is readable in tests."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

SECTION = ("wplus", "W+ Adapter")
EXT_ROOT = Path(__file__).resolve().parents[2]  # the extension's folder (the WebUI's extensions/<name>)
EXT_MODELS = EXT_ROOT / "models"
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
class ExtensionSettings:
    models_dir: Path
    face_backend: str = _default("wplus_face_backend")
    cache_size: int = _default("wplus_cache_size")
    unload_encoder: bool = _default("wplus_unload_encoder")
    auto_download: bool = _default("wplus_auto_download")

    @classmethod
    def from_getter(cls, get: Callable[[str, Any], Any], default_models_dir: Path) -> "ExtensionSettings":
        """`get(key, default)` reads one option (e.g. from the WebUI's `shared.opts`)."""
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
        )

    @classmethod
    def from_opts(cls, opts: Any, ext_models: Path = EXT_MODELS) -> "ExtensionSettings":
        """The settings as the WebUI's `shared.opts` holds them (what every glue script reads)."""
        return cls.from_getter(lambda key, default: getattr(opts, key, default), ext_models)

    def adapter_dirs(self, ext_models: Path = EXT_MODELS) -> list[Path]:
        """Where adapter files are looked for: the models folder, then the extension's own."""
        from wplus.webui.catalog import adapter_dirs

        return adapter_dirs(self.models_dir, [ext_models])

    def download_blocker(self) -> str:
        """Why a missing file is not downloaded ("" when downloads are allowed), naming the cause."""
        from wplus.assets.download import offline_variable

        if not self.auto_download:
            return f"Settings > W+ Adapter > {SPEC['wplus_auto_download'].label} is off"
        variable = offline_variable()
        return f"the environment variable {variable} is set" if variable else ""
