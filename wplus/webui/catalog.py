"""What the W+ panel offers: adapter files, saved identities and edit directions.

Everything here is cheap and never downloads: the panel is built at WebUI start-up, and weights
are fetched on first use instead. When the paper's directions are not on disk yet, their sliders
come from the registry (names, groups and the loader's ranges), so the panel looks the same before
and after the first download; GANSpace sliders appear once their table is on disk.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

ADAPTER_SUFFIXES = (".bin", ".safetensors", ".pt", ".pth")
DEFAULT_ADAPTER = "wplus_adapter.bin"


@dataclass(frozen=True)
class DirectionInfo:
    name: str
    group: str
    minimum: float
    maximum: float
    step: float

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")


def adapter_dirs(models_dir: Path, extra: Iterable[Path] = ()) -> list[Path]:
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


def list_identities(models_dir: Path) -> list[str]:
    from wplus.identity.files import identities_dir
    from wplus.identity.files import list_identities as _list

    try:
        return _list(identities_dir(models_dir))
    except OSError:
        return []


def direction_catalog(models_dir: Path) -> list[DirectionInfo]:
    """Sliders: the directions on disk, else the registry's (latent + InterFaceGAN) plus user files."""
    from wplus.assets import registry
    from wplus.stylegan.directions import USER_SUBDIR, DirectionLibrary

    models_dir = Path(models_dir)
    official = models_dir / registry.DIRECTIONS_SUBDIR
    user = models_dir / USER_SUBDIR
    try:
        if official.is_dir():
            lib = DirectionLibrary.from_folders(official, user)
            return [DirectionInfo(d.name, d.group, d.minimum, d.maximum, d.step) for d in lib.list()]
    except Exception:  # a broken folder must not break the WebUI's start-up; generation reports it
        pass
    return _registry_catalog()


def _registry_catalog() -> list[DirectionInfo]:
    from wplus.assets import registry
    from wplus.stylegan.directions import GROUP_OF, GROUPS, SOURCES

    found = []
    for entry in registry.direction_files():
        parts = Path(entry.filename)
        if parts.parent.name == "latent_directions" and parts.suffix == ".npy":
            found.append(("latent", parts.stem))
        elif parts.parent.name == "interfacegan_directions" and parts.suffix == ".pt":
            found.append(("interfacegan", parts.stem))
    rank = {s: i for i, s in enumerate(SOURCES)}
    taken: set[str] = set()
    out = []
    for source, stem in sorted(found, key=lambda f: (rank[f[0]], f[1])):
        name = stem if stem not in taken else f"{source}/{stem}"
        taken.add(name)
        out.append(DirectionInfo(name, GROUP_OF.get(stem, "other"), -5.0, 5.0, 0.1))
    order = {g: i for i, g in enumerate(GROUPS)}
    return sorted(out, key=lambda d: (order.get(d.group, len(GROUPS)), d.name))
