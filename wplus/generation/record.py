"""What a generation records about itself: the `Wplus …` parameters of its infotext (the WebUI's
"parameters" text, which the diffusers command line also writes into its PNGs).

Keys start with "Wplus", not "W+": the WebUI's infotext grammar only accepts word characters,
spaces, '-' and '/' in keys, so a "W+ ..." key would not survive pasting back. Values stay free of
',' and ':' where possible (the WebUI quotes such values, which also parses back). Reading them
back into a request is the WebUI's business (`wplus.webui.infotext`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from wplus.generation.options import EDITS, INFOTEXT_KEYS, INFOTEXT_PREFIX, OPTION, RECORDED_KEYS, Source
from wplus.stylegan.edit_text import format_edits

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
K_SCORE = f"{PREFIX} score"  # similarity/distance of each image's face to the reference (dlib)
PNG_KEY = "parameters"  # the PNG text chunk the WebUI's PNG Info reads


def code_hash(w: torch.Tensor) -> str:
    """Short content hash of a W+ code (what the infotext records as the identity)."""
    data = w.detach().to(torch.float32).cpu().contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:10]


def format_mix(label: str, weights: float | Sequence[float] | None) -> str:
    if isinstance(weights, (tuple, list)):
        return f"{label}@" + "/".join(_num(w) for w in weights)
    return f"{label}@{_num(weights if weights is not None else 0.5)}"


def _num(x: float) -> str:
    return f"{float(x):g}"


def quote(value: Any) -> str:
    """As the WebUI: values holding ',', ':' or a newline are written as JSON strings."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def parameters_text(prompt: str, negative_prompt: str, params: Mapping[str, Any]) -> str:
    """The WebUI's infotext: the prompt, `Negative prompt: …`, then `Key: value` pairs."""
    line = ", ".join(f"{k}: {quote(v)}" for k, v in params.items() if v is not None)
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}"
