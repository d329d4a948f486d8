"""The documented `alwayson_scripts` argument of the W+ Adapter script (WebUI API).

    "alwayson_scripts": {"W+ Adapter": {"args": [{
        "reference": "<base64 PNG/JPEG, or a data: URL>",   # or "identity": "alice", or "seed": 42;
                                                           # a list of photos of one person: their mean W+
        "face_index": -1,                                  # -1 = largest face, 0.. left to right
        "scale": 1.0, "start": 20,                         # λ, start of injection in % of steps
        "edits": {"smile": 1.5, "age": -1},
        "mix_with": {"identity": "bob"}, "mix": 0.3,       # or "mix": [coarse, middle, fine]
        "adapter": "wplus_adapter.bin",
        "adetailer": {"enabled": true, "scale": 0.8,        # ADetailer's face pass (scale: default the λ above)
                      "identities": ["alice", "bob"]}      # one saved identity per face, in ADetailer's order
    }]}}

A dict as the first arg selects this form; the positional panel values still work too.
"""
from __future__ import annotations

from typing import Any, Mapping

from wplus.generation.photos import MAX_BASE64_CHARS  # noqa: F401
from wplus.webui.options import EDITS, OPTION, OPTIONS, MixMode, OptionError, PanelArgs, Source, check_edits

# the dict's keys: every option's API key and alias, at the top level ("mix_with.seed" lives inside "mix_with")
KEYS = {k.split(".", 1)[0] for o in (*OPTIONS, EDITS) if o.api_key for k in (o.api_key, *o.api_aliases)}
SOURCE_KEYS = ("reference", "identity", "seed")  # one of them selects the source
AD_KEYS = {k.split(".", 1)[1] for o in OPTIONS if (o.api_key or "").startswith("adetailer.")
           for k in (o.api_key, *o.api_aliases)}  # inside "adetailer"
_SOURCE_OF = {"reference": Source.PHOTO, "identity": Source.SAVED, "seed": Source.SEED}

ApiArgsError = OptionError  # the API's errors are the options' errors (one message for every entry point)


def is_api_dict(first_arg: Any) -> bool:
    return isinstance(first_arg, Mapping)


def parse(obj: Mapping[str, Any], limits: Mapping[str, tuple[float, float]] | None = None) -> PanelArgs:
    """Validate the documented dict and turn it into panel values (enabled unless it says not);
    `limits`: the edit directions' ranges, where the caller knows them."""
    unknown = sorted(set(obj) - KEYS)
    if unknown:
        raise ApiArgsError(f"W+ Adapter API: unknown key(s) {unknown}; allowed: {sorted(KEYS)}")
    args = PanelArgs(enabled=OPTION["enabled"].check(obj.get("enabled", True)))
    args.source, args.reference, args.identity, args.seed = _source(obj, "")
    for name in ("face_index", "start", "adapter"):
        if name in obj:
            setattr(args, name, OPTION[name].check(obj[name]))
    _scale(obj, args)
    edits = obj.get("edits", {})
    if not isinstance(edits, Mapping):
        raise ApiArgsError("W+ Adapter API: 'edits' must be a dict {direction name: strength}")
    args.edits = check_edits(edits, limits)
    _mix_with(obj, args)
    if "adetailer" in obj:
        _adetailer(obj["adetailer"], args)
    return args


def _scale(obj: Mapping[str, Any], args: PanelArgs) -> None:
    """"scale" or its alias "lambda" (not both)."""
    scale = OPTION["scale"]
    given = [k for k in (scale.api_key, *scale.api_aliases) if k in obj]
    if len(given) > 1:
        raise ApiArgsError("W+ Adapter API: give 'scale' or its alias 'lambda', not both")
    if given:
        args.scale = scale.check(obj[given[0]])


def _mix_with(obj: Mapping[str, Any], args: PanelArgs) -> None:
    """"mix_with": {one source key} and "mix": a weight or [coarse, middle, fine]."""
    if "mix_with" not in obj:
        if "mix" in obj:
            raise ApiArgsError("W+ Adapter API: 'mix' needs 'mix_with' (the second identity)")
        return
    if not isinstance(obj["mix_with"], Mapping):
        raise ApiArgsError("W+ Adapter API: 'mix_with' must be a dict with 'reference', 'identity' or 'seed'")
    unknown = sorted(set(obj["mix_with"]) - set(SOURCE_KEYS))
    if unknown:
        raise ApiArgsError(f"W+ Adapter API: unknown key(s) {unknown} in 'mix_with'; allowed: {list(SOURCE_KEYS)}")
    args.source2, args.reference2, args.identity2, args.seed2 = _source(obj["mix_with"], "mix_with.")
    _mix(obj.get("mix", OPTION["mix"].default), args)


def _adetailer(value: Any, args: PanelArgs) -> None:
    """"adetailer": true/false, or {"enabled", "scale" (alias "lambda"), "identities": [names]}."""
    if isinstance(value, bool):
        args.ad_enabled = value
        return
    if not isinstance(value, Mapping):
        raise ApiArgsError("W+ Adapter API: 'adetailer' must be true/false or a dict with 'enabled', 'scale', "
                           "'identities'")
    unknown = sorted(set(value) - AD_KEYS)
    if unknown:
        raise ApiArgsError(f"W+ Adapter API: unknown key(s) {unknown} in 'adetailer'; allowed: {sorted(AD_KEYS)}")
    if "scale" in value and "lambda" in value:
        raise ApiArgsError("W+ Adapter API: give 'adetailer.scale' or its alias 'adetailer.lambda', not both")
    args.ad_enabled = OPTION["ad_enabled"].check(value.get("enabled", True))
    if "scale" in value or "lambda" in value:
        args.ad_scale = OPTION["ad_scale"].check(value.get("scale", value.get("lambda")))
    names = value.get("identities", "")
    option = OPTION["ad_identities"]
    if isinstance(names, (list, tuple)):
        if not all(isinstance(n, str) for n in names):
            raise option.error(f"must be {option.what}")
        names = ", ".join(n.strip() for n in names if n.strip())
    args.ad_identities = option.check(names)


def _source(obj: Mapping[str, Any], prefix: str) -> tuple[Source, Any, str, int]:
    given = [k for k in SOURCE_KEYS if obj.get(k) not in (None, "")]
    if len(given) > 1:
        raise ApiArgsError(f"W+ Adapter API: give only one of {[prefix + k for k in SOURCE_KEYS]}; got {given}")
    if not given:
        if prefix:
            raise ApiArgsError(f"W+ Adapter API: '{prefix[:-1]}' needs one of {list(SOURCE_KEYS)}")
        return Source.PHOTO, None, "", 0
    key = given[0]
    option = OPTION[key + ("2" if prefix else "")]
    value = obj[key] if key != "reference" else _reference(obj[key], option)
    value = option.check(value)
    out = {"reference": None, "identity": "", "seed": 0, key: value}
    return _SOURCE_OF[key], out["reference"], out["identity"], out["seed"]


def _reference(value: Any, option) -> Any:
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)  # photos of one person: one identity, the mean of their W+ codes
    if not isinstance(value, str):
        raise option.error(f"must be {option.what}, or a list of them (photos of one person)")
    return value


def _mix(value: Any, args: PanelArgs) -> None:
    if isinstance(value, (list, tuple)):
        if len(value) != 3:
            raise ApiArgsError("W+ Adapter API: 'mix' as a list needs 3 weights [coarse, middle, fine]")
        args.mix_mode = MixMode.PER_GROUP
        args.mix_coarse, args.mix_middle, args.mix_fine = (OPTION[n].check(v) for n, v in
                                                           zip(("mix_coarse", "mix_middle", "mix_fine"), value))
    else:
        args.mix_mode = MixMode.GLOBAL
        args.mix = OPTION["mix"].check(value)
