"""What the W+ panel offers: adapter files, saved identities and edit directions.

Everything here is cheap and never downloads: the panel is built at WebUI start-up, and weights
are fetched on first use instead. When the paper's directions are not on disk yet, their sliders
come from the registry (names, groups and the loader's ranges), so the panel looks the same before
and after the first download; GANSpace sliders appear once their table is on disk.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

from wplus.generation.adapters import (  # noqa: F401  (the panel lists what the rule chooses from)
    ADAPTER_SUFFIXES,
    DEFAULT_ADAPTER,
    adapter_dirs,
    choose_adapter,
    find_adapter,
    list_adapters,
)
from wplus.geometry import NUM_STYLES

FIRST_SCREEN = ("smile", "age", "gender", "glasses")  # the edits shown without opening an accordion
SOURCE_LABELS = {"interfacegan": "InterFaceGAN", "latent": "latent", "ganspace": "GANSpace", "user": "your file"}
_READABLE = {  # upstream file names that do not read as labels
    "emotion_angry": "Angry", "emotion_disgust": "Disgusted", "emotion_easy": "Calm", "emotion_fear": "Fearful",
    "emotion_happy": "Happy", "emotion_sad": "Sad", "emotion_surprise": "Surprised", "eyes_open": "Eyes open",
    "angle_horizontal": "Head turn (left/right)", "angle_pitch": "Head tilt (up/down)",
    "race_black": "Ethnicity: black", "race_white": "Ethnicity: white", "race_yellow": "Ethnicity: east asian",
    "width": "Face width", "height": "Face height", "light_lr": "Light left/right",
}


@dataclass(frozen=True)
class DirectionInfo:
    name: str  # what the API, the infotext and X/Y/Z call it (e.g. "smile", "latent/smile")
    group: str
    minimum: float
    maximum: float
    step: float
    source: str = ""  # "interfacegan", "latent", "ganspace", "user"
    stem: str = ""  # the attribute (file name or GANSpace row) without its source
    layers: tuple[int, int] = (0, NUM_STYLES)  # the W+ layers it edits, [first, end)
    advanced: bool = False  # another source offers the same attribute with the default slider

    @property
    def axis_label(self) -> str:
        """The X/Y/Z axis' name for it (the direction's name as typed)."""
        return self.name.replace("_", " ")

    @property
    def label(self) -> str:
        text = readable(self.stem or self.name)
        return f"{text} ({SOURCE_LABELS.get(self.source, self.source)})" if self.advanced else text

    @property
    def hint(self) -> str:
        first, end = self.layers
        every = (first, end) == (0, NUM_STYLES)
        layers = f"all {NUM_STYLES} W+ layers" if every else f"W+ layers {first}-{end - 1} of 0-{NUM_STYLES - 1}"
        source = SOURCE_LABELS.get(self.source, self.source) or "edit"
        return (f"{readable(self.stem or self.name)}: the {source} direction '{self.name}', editing {layers}. "
                f"0 = no edit; the scene stays the same, only the face changes. Double-click to reset.")


def readable(stem: str) -> str:
    """A label for an upstream direction name: "emotion_easy" -> "Calm", "big_smile" -> "Big smile"."""
    stem = stem.rsplit("/", 1)[-1]
    text = _READABLE.get(stem) or stem.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def group_label(group: str) -> str:
    return group[:1].upper() + group[1:]


def _mark_advanced(infos: list[DirectionInfo]) -> list[DirectionInfo]:
    """Where several sources offer one attribute, the one with the plain name is the default slider."""
    plain = {d.stem for d in infos if d.name == d.stem}
    return [replace(d, advanced=d.name != d.stem and d.stem in plain) for d in infos]


@dataclass(frozen=True)
class AdapterChoices:
    """The adapter dropdown: file names, the one to select, and a note when it is not on disk."""

    names: list[str]
    value: str
    info: str = ""


def adapter_choices(dirs: Iterable[Path], current: str = "", missing_note: str = "") -> AdapterChoices:
    """Keep `current` when it is listed; else the default adapter when it is on disk, else a file
    that is; else the default, with `missing_note` saying what happens to it on first use."""
    dirs = list(dirs)
    names = list_adapters(dirs)
    value = current if current and current in names else choose_adapter("", dirs)
    missing = value == DEFAULT_ADAPTER and find_adapter(value, dirs) is None
    return AdapterChoices(names, value, f"{DEFAULT_ADAPTER}: {missing_note}" if missing and missing_note else "")


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
            return _mark_advanced([DirectionInfo(d.name, d.group, d.minimum, d.maximum, d.step, d.source,
                                                 d.key.split("/", 1)[-1], d.layers) for d in lib.list()])
    except Exception:  # a broken folder must not break the WebUI's start-up; generation reports it
        pass
    return _registry_catalog()


def _registry_catalog() -> list[DirectionInfo]:
    from wplus.assets import registry
    from wplus.stylegan.direction_names import LAYERS, assign_names, group_of, sort_key

    found = []
    for entry in registry.direction_files():
        parts = Path(entry.filename)
        if parts.parent.name == "latent_directions" and parts.suffix == ".npy":
            found.append(("latent", parts.stem))
        elif parts.parent.name == "interfacegan_directions" and parts.suffix == ".pt":
            found.append(("interfacegan", parts.stem))
    out = [DirectionInfo(name, group_of(stem), -5.0, 5.0, 0.1, source, stem, LAYERS[source])
           for name, _, (source, stem) in assign_names(found)]
    return _mark_advanced(sorted(out, key=lambda d: sort_key(d.group, d.name)))
