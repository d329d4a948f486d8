"""The documented `alwayson_scripts` argument of the W+ Adapter script (WebUI API).

    "alwayson_scripts": {"W+ Adapter": {"args": [{
        "reference": "<base64 PNG/JPEG, or a data: URL>",   # or "identity": "alice", or "seed": 42
        "face_index": -1,                                  # -1 = largest face, 0.. left to right
        "scale": 1.0, "start": 20,                         # λ, start of injection in % of steps
        "edits": {"smile": 1.5, "age": -1},
        "mix_with": {"identity": "bob"}, "mix": 0.3,       # or "mix": [coarse, middle, fine]
        "adapter": "wplus_adapter.bin"
    }]}}

A dict as the first arg selects this form; the positional panel values still work too.
"""
from __future__ import annotations

import base64
import binascii
import io
from typing import Any, Mapping

from wplus.errors import ImageInputError, WPlusError
from wplus.webui.options import MIX_MODES, SCALE_LIMIT, SOURCES, PanelArgs

KEYS = {"enabled", "reference", "identity", "seed", "face_index", "scale", "lambda", "start", "edits",
        "mix_with", "mix", "adapter"}
SOURCE_KEYS = ("reference", "identity", "seed")
MAX_BASE64_CHARS = 64 * 1024 * 1024


class ApiArgsError(WPlusError):
    """The W+ Adapter entry of `alwayson_scripts` is malformed; the message says which key."""


def is_api_dict(first_arg: Any) -> bool:
    return isinstance(first_arg, Mapping)


def parse(obj: Mapping[str, Any]) -> PanelArgs:
    """Validate the documented dict and turn it into panel values (enabled unless it says not)."""
    unknown = sorted(set(obj) - KEYS)
    if unknown:
        raise ApiArgsError(f"W+ Adapter API: unknown key(s) {unknown}; allowed: {sorted(KEYS)}")
    args = PanelArgs(enabled=_bool(obj.get("enabled", True), "enabled"))
    args.source, args.reference, args.identity, args.seed = _source(obj, "")
    args.face_index = _int(obj.get("face_index", -1), "face_index", lo=-1)
    if "scale" in obj and "lambda" in obj:
        raise ApiArgsError("W+ Adapter API: give 'scale' or its alias 'lambda', not both")
    args.scale = _float(obj.get("scale", obj.get("lambda", args.scale)), "scale", 0.0, SCALE_LIMIT)
    args.start = _float(obj.get("start", args.start), "start", 0.0, 100.0)
    args.edits = _edits(obj.get("edits", {}))
    if "mix_with" in obj:
        if not isinstance(obj["mix_with"], Mapping):
            raise ApiArgsError("W+ Adapter API: 'mix_with' must be a dict with 'reference', 'identity' or 'seed'")
        args.source2, args.reference2, args.identity2, args.seed2 = _source(obj["mix_with"], "mix_with.")
        _mix(obj.get("mix", 0.5), args)
    elif "mix" in obj:
        raise ApiArgsError("W+ Adapter API: 'mix' needs 'mix_with' (the second identity)")
    adapter = obj.get("adapter", "")
    if not isinstance(adapter, str):
        raise ApiArgsError("W+ Adapter API: 'adapter' must be a file name (string)")
    args.adapter = adapter
    return args


def decode_image(value: Any):
    """A PIL image from a PIL image, an HxWxC array, or base64 (optionally a data: URL)."""
    from PIL import Image

    if value is None:
        return None
    if isinstance(value, Image.Image):
        return value
    if hasattr(value, "__array__") and not isinstance(value, (str, bytes)):
        import numpy as np

        return Image.fromarray(np.asarray(value))
    if isinstance(value, str):
        if len(value) > MAX_BASE64_CHARS:
            raise ImageInputError("W+ reference: the base64 image is larger than 64 MB")
        text = value.split(",", 1)[1] if value.startswith("data:") else value
        try:
            value = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ImageInputError("W+ reference: not valid base64 image data (send the PNG/JPEG file bytes "
                                  "base64-encoded, optionally as a data: URL)") from e
    if isinstance(value, (bytes, bytearray)):
        try:
            image = Image.open(io.BytesIO(value))
            image.load()
            return image
        except Exception as e:  # PIL raises several types for undecodable data
            raise ImageInputError(f"W+ reference: the data is not a readable image ({e})") from e
    raise ImageInputError(f"W+ reference: expected an image or base64 string, got {type(value).__name__}")


def _source(obj: Mapping[str, Any], prefix: str) -> tuple[str, Any, str, int]:
    given = [k for k in SOURCE_KEYS if obj.get(k) not in (None, "")]
    if len(given) > 1:
        raise ApiArgsError(f"W+ Adapter API: give only one of {[prefix + k for k in SOURCE_KEYS]}; got {given}")
    if not given:
        if prefix:
            raise ApiArgsError(f"W+ Adapter API: '{prefix[:-1]}' needs one of {list(SOURCE_KEYS)}")
        return SOURCES[0], None, "", 0
    key = given[0]
    if key == "reference":
        if not isinstance(obj[key], str):
            raise ApiArgsError(f"W+ Adapter API: '{prefix}reference' must be a base64 string")
        return SOURCES[0], obj[key], "", 0
    if key == "identity":
        if not isinstance(obj[key], str):
            raise ApiArgsError(f"W+ Adapter API: '{prefix}identity' must be a saved identity's name")
        return SOURCES[1], None, obj[key], 0
    return SOURCES[2], None, "", _int(obj[key], prefix + "seed", lo=0)


def _mix(value: Any, args: PanelArgs) -> None:
    if isinstance(value, (list, tuple)):
        if len(value) != 3:
            raise ApiArgsError("W+ Adapter API: 'mix' as a list needs 3 weights [coarse, middle, fine]")
        args.mix_mode = MIX_MODES[1]
        args.mix_coarse, args.mix_middle, args.mix_fine = (_float(v, "mix", 0.0, 1.0) for v in value)
    else:
        args.mix_mode = MIX_MODES[0]
        args.mix = _float(value, "mix", 0.0, 1.0)


def _edits(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ApiArgsError("W+ Adapter API: 'edits' must be a dict {direction name: strength}")
    return {str(k): _float(v, f"edits.{k}", -100.0, 100.0) for k, v in value.items()}


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ApiArgsError(f"W+ Adapter API: '{key}' must be true or false")


def _float(value: Any, key: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiArgsError(f"W+ Adapter API: '{key}' must be a number")
    if not lo <= float(value) <= hi:
        raise ApiArgsError(f"W+ Adapter API: '{key}' must be between {lo:g} and {hi:g}; got {value}")
    return float(value)


def _int(value: Any, key: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) and not (isinstance(value, float) and value.is_integer()):
        raise ApiArgsError(f"W+ Adapter API: '{key}' must be an integer")
    if int(value) < lo:
        raise ApiArgsError(f"W+ Adapter API: '{key}' must be >= {lo}; got {value}")
    return int(value)
