"""Which adapter a generation uses, and loading it once: one rule for the panel, the API, the
command line and the nodes.

Adapter files live in the models folder (and a host's own folders after it); requests name them by
file name. An empty name means "the host's choice" (`choose_adapter`): the default adapter when it is
on disk, else the adapter file that is. Only the default adapter is downloaded when missing.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Iterable

from torch import nn

from wplus.assets.fingerprint import stat_key
from wplus.errors import MissingWeightsError
from wplus.generation.settings import Settings

ADAPTER_SUFFIXES = (".bin", ".safetensors", ".pt", ".pth")
DEFAULT_ADAPTER = "wplus_adapter.bin"


def adapter_dirs(models_dir: Path, extra: Iterable[Path] = ()) -> list[Path]:
    """The models folder, then the host's other folders (each once)."""
    dirs = [Path(models_dir)]
    dirs += [Path(d) for d in extra if Path(d) not in dirs]
    return dirs


def list_adapters(dirs: Iterable[Path]) -> list[str]:
    """Adapter files by name; the default adapter is always listed (it downloads on first use)."""
    names = {DEFAULT_ADAPTER}
    for d in dirs:
        if Path(d).is_dir():
            names.update(p.name for p in Path(d).iterdir()
                         if p.is_file() and p.suffix.lower() in ADAPTER_SUFFIXES and _looks_like_adapter(p))
    return sorted(names, key=lambda n: (n != DEFAULT_ADAPTER, n.lower()))


def find_adapter(name: str, dirs: Iterable[Path]) -> Path | None:
    name = os.path.basename(name or DEFAULT_ADAPTER)
    for d in dirs:
        candidate = Path(d) / name
        if candidate.is_file():
            return candidate
    return None


def _looks_like_adapter(path: Path) -> bool:
    # the e4e checkpoint and identity files share suffixes with adapters
    return not path.name.startswith(("e4e", ".")) and "identit" not in path.name


_adapters: dict[tuple[str, int, int], tuple[nn.Module, str]] = {}
_adapters_lock = threading.Lock()


def choose_adapter(name: str, dirs: Iterable[Path]) -> str:
    """The one choice rule, for the panel's dropdown and for a request that names no adapter: `name`
    when given, else the default adapter when it is on disk (or nothing is), else the first adapter
    file on disk."""
    dirs = list(dirs)
    if name:
        return name
    present = [n for n in list_adapters(dirs) if find_adapter(n, dirs) is not None]
    return DEFAULT_ADAPTER if DEFAULT_ADAPTER in present or not present else present[0]


def resolve_adapter_path(name: str, settings: Settings, extra_dirs: Iterable[Path] = ()) -> Path:
    """The adapter file named `name` (a file name: folders are dropped), or the one `choose_adapter`
    picks when `name` is empty: found in the models folders, else (default adapter only) downloaded."""
    from wplus.assets import registry
    from wplus.assets.download import ensure_file, missing_message

    dirs = adapter_dirs(settings.models_dir, extra_dirs)
    name = choose_adapter(name, dirs)
    found = find_adapter(name, dirs)
    if found is not None:
        return found
    entry = registry.get("adapter")
    name = os.path.basename(name or DEFAULT_ADAPTER)
    if name != entry.filename:
        raise MissingWeightsError(f"W+: adapter file {name!r} not found in {', '.join(str(d) for d in dirs)}. "
                                  "Put it there, or pick an adapter file that is there (in the WebUI, press the "
                                  "refresh button next to the adapter list).")
    cause = settings.download_blocker()
    if cause:
        raise MissingWeightsError(missing_message(entry, settings.models_dir,
                                                  f"automatic download is disabled: {cause}"))
    return ensure_file(entry, settings.models_dir, allow_download=True)


def load_adapter_cached(path: Path) -> tuple[nn.Module, str]:
    """(adapter, short hash of its weights: `adapter_fingerprint`), loaded once per file version;
    `attach` moves it to the UNet's device/dtype, where it stays for the next generation."""
    from wplus.branch.files import adapter_fingerprint, load_adapter

    key = stat_key(path)
    with _adapters_lock:
        if key not in _adapters:
            for old in [k for k in _adapters if k[0] == key[0]]:
                del _adapters[old]
            _adapters[key] = (load_adapter(str(path)).eval(), adapter_fingerprint(path)[:10])
        return _adapters[key]
