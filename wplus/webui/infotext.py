"""The W+ parameters in an image's infotext ("Wplus lambda: 1.0, ...") and back to panel values.

Keys start with "Wplus", not "W+": the WebUI's infotext grammar only accepts word characters,
spaces, '-' and '/' in keys, so a "W+ ..." key would not survive pasting back. Values stay free of
',' and ':' where possible (the WebUI quotes such values, which also parses back).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from wplus.stylegan import edit_text
from wplus.stylegan.edit_text import format_edits
from wplus.webui.options import MIX_MODES, SOURCES, SOURCES2, PanelArgs

PREFIX = "Wplus"
K_IDENTITY = f"{PREFIX} identity"
K_IDENTITY_HASH = f"{PREFIX} identity hash"
K_FACE = f"{PREFIX} face"
K_LAMBDA = f"{PREFIX} lambda"
K_START = f"{PREFIX} start"
K_EDITS = f"{PREFIX} edits"
K_MIX = f"{PREFIX} mix"
K_ADAPTER = f"{PREFIX} adapter"
K_ADAPTER_HASH = f"{PREFIX} adapter hash"
ALL_KEYS = (K_IDENTITY, K_IDENTITY_HASH, K_FACE, K_LAMBDA, K_START, K_EDITS, K_MIX, K_ADAPTER, K_ADAPTER_HASH)

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
    if source == SOURCES[1]:
        return identity
    if source == SOURCES[2]:
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


def panel_from_params(p: Mapping[str, Any], direction_names: Sequence[str]) -> PanelArgs | None:
    """Panel values restoring a pasted infotext; None when it has no W+ parameters.

    A reference photo cannot be restored from text: the source stays "Photo" and the image field is
    left as it is (`reference` None means "unchanged").
    """
    if not has_wplus(p):
        return None
    args = PanelArgs(enabled=True)
    args.source, args.identity, args.seed = _parse_label(str(p.get(K_IDENTITY, PHOTO_LABEL)))
    args.face_index = _to_int(p.get(K_FACE), -1)
    args.scale = _to_float(p.get(K_LAMBDA), args.scale)
    args.start = _to_float(p.get(K_START), args.start)
    edits = parse_edits(p.get(K_EDITS, ""))
    args.edits = {n: edits.get(n, 0.0) for n in direction_names}
    args.edits.update({k: v for k, v in edits.items() if k not in args.edits})
    mix = parse_mix(p.get(K_MIX, "")) if K_MIX in p else None
    if mix is None:
        args.source2 = SOURCES2[0]
    else:
        label, weights = mix
        args.source2, args.identity2, args.seed2 = _parse_label(label)
        if isinstance(weights, tuple):
            args.mix_mode = MIX_MODES[1]
            args.mix_coarse, args.mix_middle, args.mix_fine = weights
        else:
            args.mix_mode, args.mix = MIX_MODES[0], weights
    args.adapter = str(p.get(K_ADAPTER, ""))
    return args


def _parse_label(label: str) -> tuple[str, str, int]:
    label = label.strip()
    if label == PHOTO_LABEL:
        return SOURCES[0], "", 0
    if label.startswith(SEED_LABEL + " ") and label[len(SEED_LABEL) + 1:].strip().isdigit():
        return SOURCES[2], "", int(label[len(SEED_LABEL) + 1:])
    return SOURCES[1], label, 0


def _num(x: float) -> str:
    return f"{float(x):g}"


def _to_float(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _to_int(value: Any, default: int) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default
