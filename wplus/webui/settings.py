"""The extension's settings as the WebUI holds them (`shared.opts`, Settings tab "W+ Adapter"):
the same `Settings` every host resolves with, read from the WebUI, and the extension's own folder."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wplus.generation.settings import FACE_BACKENDS, SECTION, SPEC, SPECS, Settings, SettingSpec  # noqa: F401

EXT_ROOT = Path(__file__).resolve().parents[2]  # the extension's folder (the WebUI's extensions/<name>)
EXT_MODELS = EXT_ROOT / "models"
DOWNLOADS_OFF = f"Settings > {SECTION[1]} > {SPEC['wplus_auto_download'].label} is off"


@dataclass(frozen=True)
class ExtensionSettings(Settings):
    """`Settings` read from the WebUI."""

    downloads_off: str = DOWNLOADS_OFF

    @classmethod
    def from_opts(cls, opts: Any, ext_models: Path = EXT_MODELS) -> "ExtensionSettings":
        """The settings as the WebUI's `shared.opts` holds them (what every glue script reads)."""
        return cls.from_getter(lambda key, default: getattr(opts, key, default), ext_models)

    def adapter_dirs(self, ext_models: Path = EXT_MODELS) -> list[Path]:
        """Where adapter files are looked for: the models folder, then the extension's own."""
        from wplus.generation.adapters import adapter_dirs

        return adapter_dirs(self.models_dir, [ext_models])
