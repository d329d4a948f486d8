"""The W+ model folders in ComfyUI: registered with `folder_paths`, read by name only.

`wplus`: adapters (`models/wplus/*.bin|*.safetensors`, then the product's own `models/` folder,
as in the WebUI); `wplus_identities`: saved identities (`models/wplus/identities/`, then the
product's `models/identities/`). e4e and the edit directions are looked for in `models/wplus/`
first, else in the product's folder (fetched there when missing, as everywhere else). Nodes pass
names from these lists, never paths.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from wplus.assets import registry
from wplus.assets.fingerprint import stat_key
from wplus.errors import IdentityNotFoundError, WPlusError

FOLDER = "wplus"
IDENTITY_FOLDER = "wplus_identities"
ADAPTER_SUFFIXES = (".bin", ".safetensors")
IDENTITY_SUFFIXES = (".safetensors", ".pth", ".pt")
#: Sub-folders of the wplus folders that hold other files than adapters.
NOT_ADAPTERS = (registry.IDENTITIES_SUBDIR, registry.DIRECTIONS_SUBDIR, registry.FACEXLIB_SUBDIR, "w_direction_user")

_adapters: dict[tuple, Any] = {}
_lock = threading.Lock()


def _folder_paths():
    import folder_paths  # ComfyUI's; imported on use so the pack's modules load without ComfyUI

    return folder_paths


def comfy_models_dir() -> Path:
    """ComfyUI's `models/wplus/`."""
    return Path(_folder_paths().models_dir) / FOLDER


def register() -> None:
    """Add the two folders to ComfyUI's `folder_paths` (idempotent; extra_model_paths.yaml may add more)."""
    fp = _folder_paths()
    ours, product = comfy_models_dir(), registry.default_models_dir()
    wanted = {
        FOLDER: ([ours, product], set(ADAPTER_SUFFIXES)),
        IDENTITY_FOLDER: ([ours / registry.IDENTITIES_SUBDIR, product / registry.IDENTITIES_SUBDIR],
                          set(IDENTITY_SUFFIXES)),
    }
    for name, (folders, suffixes) in wanted.items():
        if name not in fp.folder_names_and_paths:
            fp.folder_names_and_paths[name] = ([], suffixes)
        for folder in folders:
            fp.add_model_folder_path(name, str(folder))


def adapter_names() -> list[str]:
    """Adapter files of the wplus folders, as ComfyUI lists them (relative names)."""
    names = _folder_paths().get_filename_list(FOLDER)
    e4e = registry.get("e4e").filename
    return [n for n in names if Path(n).suffix.lower() in ADAPTER_SUFFIXES and Path(n).name != e4e
            and Path(n).parts[0] not in NOT_ADAPTERS]


def load_adapter(name: str):
    """The adapter of that listed name (loaded once per file version, fp32 on the CPU)."""
    from wplus.branch.files import load_adapter as load

    known = adapter_names()
    if name not in known:
        raise WPlusError(f"W+: no adapter called {name!r} in {_folders(FOLDER)}; found: {', '.join(known) or 'none'}. "
                         "Put wplus_adapter.bin (or a converted .safetensors) in ComfyUI/models/wplus/.")
    path = Path(_folder_paths().get_full_path(FOLDER, name))
    key = stat_key(path)
    with _lock:
        if key not in _adapters:
            _adapters.clear()  # one adapter version in memory at a time
            _adapters[key] = load(path).eval()
        return _adapters[key]


def identity_folders() -> list[Path]:
    return [Path(p) for p in _folder_paths().get_folder_paths(IDENTITY_FOLDER)]


def identity_names() -> list[str]:
    from wplus.identity.files import list_identities

    names = {n for folder in identity_folders() for n in list_identities(folder)}
    return sorted(names, key=str.lower)


def load_identity(name: str):
    """The saved identity of that name, from the first identities folder that holds it."""
    from wplus.identity.files import check_identity_name, identity_path
    from wplus.identity.files import load_identity as load

    name = check_identity_name(name)
    for folder in identity_folders():
        try:
            identity_path(name, folder)
        except IdentityNotFoundError:
            continue
        return load(name, folder, allow_paths=False)
    known = identity_names()
    raise IdentityNotFoundError(f"W+: no identity called {name!r} in {_folders(IDENTITY_FOLDER)}; saved: "
                                f"{', '.join(known[:20]) or 'none yet'}. Make one with 'W+ Identity from Image' "
                                "and 'W+ Save Identity'.")


def save_identity(identity: Any, name: str) -> Path:
    """Into ComfyUI's `models/wplus/identities/` (created when missing)."""
    from wplus.identity.files import check_identity_name, safe_name
    from wplus.identity.files import save_identity as save

    folder = identity_folders()[0]
    folder.mkdir(parents=True, exist_ok=True)
    return save(identity, safe_name(check_identity_name(name)), folder)


def models_dir(key: str) -> Path:
    """Where the registry file `key` (e4e, a direction) is read: models/wplus/ if it holds it, else
    the product's models folder (downloaded there when missing)."""
    ours = comfy_models_dir()
    return ours if registry.get(key).path(ours).is_file() else registry.default_models_dir()


def _folders(name: str) -> str:
    return ", ".join(os.fspath(p) for p in _folder_paths().get_folder_paths(name))
