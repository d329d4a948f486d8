"""Names, groups, order and layer ranges of the edit directions: shared by the direction library
(`wplus.stylegan.directions`) and the WebUI's slider catalog (`wplus.webui.catalog`), so a slider
is called and sorted the same before and after the paper's files are on disk.

Layer ranges follow the paper's `test_demo.ipynb` and `script/utils_direction.py`: InterFaceGAN
directions move all 18 layers, the latent directions layers 0-7 only
(`id_noise[:, :8] = (id_noise0 + s * d)[:, :8]`), GANSpace edits the `[first, end)` rows of their
table; a user direction file moves all 18 unless its metadata says otherwise.
"""
from __future__ import annotations

from typing import Iterable

from wplus.geometry import NUM_STYLES

GROUPS = ("expression", "age & gender", "pose", "shape", "hair", "appearance", "lighting", "other")
SOURCES = ("interfacegan", "latent", "ganspace", "user")  # priority for plain names
#: The layers [first, end) each additive format moves (GANSpace rows come from its table).
LAYERS = {"interfacegan": (0, NUM_STYLES), "latent": (0, 8), "user": (0, NUM_STYLES)}

_GROUP_OF = {
    "expression": (
        "smile", "emotion_angry", "emotion_disgust", "emotion_easy", "emotion_fear", "emotion_happy",
        "emotion_sad", "emotion_surprise", "eyes_open", "big_smile", "caricature_smile", "scary_eyes",
        "disgusted", "displeased", "eye_openness", "fearful_eyes", "huge_grin", "in_awe", "wide_smile",
        "screaming", "show_front_teeth", "happy_frizzy_hair",
    ),
    "age & gender": (
        "age", "gender", "elderly_woman", "happy_elderly_lady", "boyishness", "wrinkles", "eye_wrinkles",
        "lipstick_and_age",
    ),
    "pose": ("angle_horizontal", "angle_pitch", "head_angle_up"),
    "shape": ("face_shape", "width", "height", "face_roundness", "large_jaw", "short_face", "nose_length"),
    "hair": (
        "frizzy_hair", "bald", "curly_hair", "dark_hair", "hairline", "straight_bowl_cut", "white_hair",
    ),
    "appearance": (
        "beauty", "glasses", "race_black", "race_white", "race_yellow", "lipstick", "mascara_vs_beard",
        "trimmed_beard", "eyebrow_thickness",
    ),
    "lighting": (
        "background_blur", "dark_bg_shiny_hair", "dark_hair_and_light_pos", "light_lr", "overexposed",
        "sunlight_in_face",
    ),
}
GROUP_OF: dict[str, str] = {name: group for group, names in _GROUP_OF.items() for name in names}


def group_of(stem: str) -> str:
    return GROUP_OF.get(stem, "other")


def assign_names(found: Iterable[tuple]) -> list[tuple[str, str, tuple]]:
    """(source, stem, ...) items -> [(name, key, item)]: a plain name goes to the highest-priority
    source (InterFaceGAN, latent, GANSpace, user), the others keep `source/stem`; key is always
    `source/stem`."""
    rank = {s: i for i, s in enumerate(SOURCES)}
    taken: set[str] = set()
    out = []
    for item in sorted(found, key=lambda f: (rank[f[0]], f[1])):
        source, stem = item[0], item[1]
        key = f"{source}/{stem}"
        name = stem if stem not in taken else key
        taken.add(name)
        out.append((name, key, item))
    return out


def sort_key(group: str, name: str) -> tuple[int, str]:
    """Sliders are listed by group (in GROUPS order), then name."""
    order = {g: i for i, g in enumerate(GROUPS)}
    return order.get(group, len(GROUPS)), name


def describe_layers(layers: tuple[int, int]) -> str:
    """'all 18 layers', 'layers 0-7', 'layer 10'."""
    first, end = layers
    if (first, end) == (0, NUM_STYLES):
        return f"all {NUM_STYLES} layers"
    return f"layer {first}" if end - first == 1 else f"layers {first}-{end - 1}"
