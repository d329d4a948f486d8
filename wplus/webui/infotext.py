"""The W+ parameters in an image's infotext ("Wplus lambda: 1.0, ...") and back to panel values.

Keys start with "Wplus", not "W+": the WebUI's infotext grammar only accepts word characters,
spaces, '-' and '/' in keys, so a "W+ ..." key would not survive pasting back. Values stay free of
',' and ':' where possible (the WebUI quotes such values, which also parses back).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from wplus.stylegan import edit_text
from wplus.stylegan.edit_text import format_edits
from wplus.webui.options import (
    EDITS,
    INFOTEXT_KEYS,
    INFOTEXT_PREFIX,
    OPTION,
    RECORDED_KEYS,
    SAME_SCALE,
    MixMode,
    PanelArgs,
    Source,
    check_edits,
)

PREFIX = INFOTEXT_PREFIX
K_IDENTITY = OPTION["source"].infotext_key
K_IDENTITY_HASH, K_ADAPTER_HASH = RECORDED_KEYS
K_FACE = OPTION["face_index"].infotext_key
K_LAMBDA = OPTION["scale"].infotext_key
K_START = OPTION["start"].infotext_key
K_EDITS = EDITS.infotext_key
K_MIX = OPTION["source2"].infotext_key
K_ADAPTER = OPTION["adapter"].infotext_key
K_AD = OPTION["ad_enabled"].infotext_key  # "off" when the face pass was turned off (absent: on)
K_AD_LAMBDA = OPTION["ad_scale"].infotext_key  # written when the branch ran in ADetailer's face pass
K_AD_IDENTITIES = OPTION["ad_identities"].infotext_key  # "alice; bob": one per face, in ADetailer's order
AD_OFF = "off"
ALL_KEYS = INFOTEXT_KEYS

PHOTO_LABEL = "photo"
SEED_LABEL = "seed"


@dataclass
class GenerationInfo:
    """What a generation used, for the infotext."""

    identity_label: str  # saved identity name, "photo" or "seed 42"
    identity_hash: str
    scale: float
    start: float  # percent
    adapter_name: str
    adapter_hash: str
    face_index: int = -1
    edits: dict[str, float] = field(default_factory=dict)
    mix_label: str = ""
    mix_weights: float | tuple[float, float, float] | None = None


def source_label(source: str, identity: str, seed: int) -> str:
    if source == Source.SAVED:
        return identity
    if source == Source.SEED:
        return f"{SEED_LABEL} {int(seed)}"
    return PHOTO_LABEL


def params(info: GenerationInfo) -> dict[str, Any]:
    """Entries for `p.extra_generation_params`."""
    out: dict[str, Any] = {
        K_IDENTITY: info.identity_label,
        K_IDENTITY_HASH: info.identity_hash,
        K_FACE: info.face_index if info.identity_label == PHOTO_LABEL and info.face_index >= 0 else None,
        K_LAMBDA: _num(info.scale),
        K_START: _num(info.start),
        K_EDITS: format_edits(info.edits) or None,
        K_MIX: format_mix(info.mix_label, info.mix_weights) if info.mix_label else None,
        K_ADAPTER: info.adapter_name,
        K_ADAPTER_HASH: info.adapter_hash,
    }
    return {k: v for k, v in out.items() if v is not None}


def parse_edits(text: str) -> dict[str, float]:
    """The edits of a pasted infotext (parts that do not parse are skipped)."""
    return edit_text.parse_edits(text, strict=False)


def format_mix(label: str, weights: float | Sequence[float] | None) -> str:
    if isinstance(weights, (tuple, list)):
        return f"{label}@" + "/".join(_num(w) for w in weights)
    return f"{label}@{_num(weights if weights is not None else 0.5)}"


def parse_mix(text: str) -> tuple[str, float | tuple[float, float, float]] | None:
    if "@" not in str(text):
        return None
    label, weights = str(text).rsplit("@", 1)
    try:
        values = [float(w) for w in weights.split("/")]
    except ValueError:
        return None
    if len(values) == 3:
        return label, (values[0], values[1], values[2])
    return (label, values[0]) if len(values) == 1 else None


def has_wplus(params_: Mapping[str, Any]) -> bool:
    return K_LAMBDA in params_ or K_IDENTITY in params_


def panel_from_params(p: Mapping[str, Any], direction_names: Sequence[str],
                      limits: Mapping[str, tuple[float, float]] | None = None) -> PanelArgs | None:
    """Panel values restoring a pasted infotext; None when it has no W+ parameters. Every value is
    checked like the other entry points' (OptionError names the option).

    A reference photo cannot be restored from text: the source stays "Photo" and the image field is
    left as it is (`reference` None means "unchanged").
    """
    if not has_wplus(p):
        return None
    args = PanelArgs(enabled=True)
    args.source, args.identity, args.seed = _parse_label(str(p.get(K_IDENTITY, PHOTO_LABEL)), "")
    for name in ("face_index", "scale", "start", "adapter"):
        option = OPTION[name]
        if option.infotext_key in p:
            setattr(args, name, option.from_text(p[option.infotext_key]))
    edits = check_edits(parse_edits(p.get(K_EDITS, "")), limits)
    args.edits = {n: edits.get(n, 0.0) for n in direction_names}
    args.edits.update({k: v for k, v in edits.items() if k not in args.edits})
    mix = parse_mix(p.get(K_MIX, "")) if K_MIX in p else None
    if K_MIX in p and mix is None:
        raise OPTION["source2"].error(f"in the infotext must look like 'name@weight' or 'name@c/m/f'; got {p[K_MIX]!r}")
    if mix is None:
        args.source2 = Source.NONE
    else:
        label, weights = mix
        args.source2, args.identity2, args.seed2 = _parse_label(label, "2")
        if isinstance(weights, tuple):
            args.mix_mode = MixMode.PER_GROUP
            args.mix_coarse, args.mix_middle, args.mix_fine = (OPTION[n].check(w) for n, w in
                                                               zip(("mix_coarse", "mix_middle", "mix_fine"), weights))
        else:
            args.mix_mode, args.mix = MixMode.GLOBAL, OPTION["mix"].check(weights)
    args.ad_enabled = str(p.get(K_AD, "")).strip().lower() != AD_OFF
    if K_AD_LAMBDA in p:
        scale = OPTION["ad_scale"].from_text(p[K_AD_LAMBDA])
        args.ad_scale = SAME_SCALE if scale == args.scale else scale  # written as the panel's λ: keep following it
    if K_AD_IDENTITIES in p:
        names = [n.strip() for n in str(p[K_AD_IDENTITIES]).split(";") if n.strip()]
        args.ad_identities = OPTION["ad_identities"].check(", ".join(names))
    return args


def _parse_label(label: str, suffix: str) -> tuple[Source, str, int]:
    label = label.strip()
    if label == PHOTO_LABEL:
        return Source.PHOTO, "", 0
    if label.startswith(SEED_LABEL + " ") and label[len(SEED_LABEL) + 1:].strip().isdigit():
        return Source.SEED, "", OPTION["seed" + suffix].from_text(label[len(SEED_LABEL) + 1:])
    return Source.SAVED, OPTION["identity" + suffix].check(label), 0


def _num(x: float) -> str:
    return f"{float(x):g}"



_QUOTED_PATH = re.compile(r"""(['"])((?:[A-Za-z]:[\\/]|~?/)[^'"]*)\1""")
_BARE_PATH = re.compile(r"""(?<![\w:/.~\\-])(?:[A-Za-z]:[\\/]|~?/)[^\s'"(),;]*""")


def without_local_paths(text: str) -> str:
    """`text` for an image's metadata: each absolute local path cut to its last part (a file's name,
    or a folder's name with its trailing separator), so the user's directory layout stays private.
    URLs are left alone."""
    def last_part(path: str) -> str:
        trail = path[-1] if path[-1:] in ("/", "\\") and len(path) > 1 else ""
        parts = [p for p in re.split(r"[\\/]", path) if p and not re.fullmatch(r"[A-Za-z]:|~", p)]
        return (parts[-1] if parts else "") + trail

    text = _QUOTED_PATH.sub(lambda m: m.group(1) + last_part(m.group(2)) + m.group(1), text)
    return _BARE_PATH.sub(lambda m: last_part(m.group(0)), text)
