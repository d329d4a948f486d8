"""Passes nested in one generation: ADetailer's face pass, and copies of the processing object.

Facts about ADetailer (Bing-su/adetailer v25.3.0, read from its `scripts/!adetailer.py`):
- after an image is sampled it inpaints each detected face with its own img2img processing object,
  marked `_ad_inner = True`, batch size 1, one pass per face in the detector's order (or its
  `ad_bbox_sortby` setting), face j with seed `all_seeds[i] + j` unless `ad_same_seed_for_each_tab`;
- those passes run only the always-on scripts whose file stem is listed in its setting
  `ad_script_names` while `ad_only_selected_scripts` is on (the default);
- it calls every always-on script's `postprocess()` and `process()` on shallow copies of the
  generation's processing object between images, so anything a script keeps on `p` is shared with
  those copies.

Nothing here imports the WebUI.
"""
from __future__ import annotations

import re
from typing import Any, Callable, MutableMapping

AD_INNER = "_ad_inner"
AD_ONLY_SELECTED = "ad_only_selected_scripts"
AD_SCRIPT_NAMES = "ad_script_names"
AD_SAME_SEED = "ad_same_seed_for_each_tab"
AD_DEFAULT_SCRIPT_NAMES = "dynamic_prompting,dynamic_thresholding,lora_block_weight,negpip,wildcard_recursive,wildcards"
SCRIPT_STEM = "wplus_script"  # the file stem ADetailer matches: scripts/wplus_script.py
MAX_FACES = 64  # a seed offset beyond this is not a face number

PANEL_IDENTITY = "*"  # in a face list: this face gets the panel's identity
NO_IDENTITY = "-"  # in a face list: this face is inpainted without W+


def is_face_pass(p: Any) -> bool:
    return getattr(p, AD_INNER, False) is True


def parse_identity_list(text: Any) -> list[str]:
    """"alice, bob" (also "alice|bob" or "alice; bob": X/Y/Z cells cannot hold commas) -> names."""
    if isinstance(text, (list, tuple)):
        return [str(t).strip() for t in text if str(t).strip()]
    return [part.strip() for part in re.split(r"[,;|]", str(text or "")) if part.strip()]


def format_identity_list(names: list[str]) -> str:
    return "; ".join(names)


def identity_for_face(names: list[str], face: int) -> str | None:
    """The identity of the `face`-th inpainted face (0-based).

    An empty list: every face gets the panel's identity (PANEL_IDENTITY). Otherwise face j gets
    names[j]; "*" means the panel's identity and "-" no W+. A face beyond the list gets no W+
    (None): two named people never turn a third face into one of them.
    """
    if not names:
        return PANEL_IDENTITY
    if face < 0 or face >= len(names):
        return None
    name = names[face]
    return None if name == NO_IDENTITY else name


def face_number(inner_seed: Any, outer_seed: Any, passes_before: int, same_seed: bool) -> int:
    """Which face of its image this pass inpaints: ADetailer seeds face j with the image's seed + j;
    with "same seed for each tab" (or an unreadable seed) count the passes of this image instead."""
    if not same_seed:
        try:
            offset = int(inner_seed) - int(outer_seed)
        except (TypeError, ValueError):
            offset = -1
        if 0 <= offset < MAX_FACES:
            return offset
    return passes_before


def image_index(p: Any) -> int:
    """Index of the image being post-processed in the whole generation (iteration × batch + index)."""
    return int(getattr(p, "iteration", 0) or 0) * int(getattr(p, "batch_size", 1) or 1) + \
        int(getattr(p, "batch_index", 0) or 0)


def image_seed(p: Any, index: int) -> Any:
    seeds = getattr(p, "all_seeds", None) or []
    if seeds:
        return seeds[index % len(seeds)]
    return getattr(p, "seed", None)


def script_listed(names: str) -> bool:
    return SCRIPT_STEM in {n.strip() for n in str(names).split(",")}


def make_eligible(data: MutableMapping[str, Any]) -> Callable[[], None] | None:
    """Let ADetailer's face pass run the W+ script for one generation, without touching the user's
    saved settings: add our file stem to `ad_script_names` in the live options and return the undo
    (None when nothing had to change: ADetailer runs every script, or the user listed ours)."""
    if not data.get(AD_ONLY_SELECTED, True):
        return None
    missing = object()
    before = data.get(AD_SCRIPT_NAMES, missing)
    names = AD_DEFAULT_SCRIPT_NAMES if before is missing or before is None else str(before)
    if script_listed(names):
        return None
    data[AD_SCRIPT_NAMES] = f"{names},{SCRIPT_STEM}" if names.strip() else SCRIPT_STEM

    def undo() -> None:
        if data.get(AD_SCRIPT_NAMES) != f"{names},{SCRIPT_STEM}" and data.get(AD_SCRIPT_NAMES) != SCRIPT_STEM:
            return  # the user changed the setting meanwhile: keep theirs
        if before is missing:
            data.pop(AD_SCRIPT_NAMES, None)
        else:
            data[AD_SCRIPT_NAMES] = before

    return undo
