"""A pasted infotext's W+ parameters back to panel values (the keys and how a generation writes
them: `wplus.generation.record`), and infotext text without the user's local paths."""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from wplus.generation.record import (  # noqa: F401  (the keys and the writer, for the WebUI glue)
    AD_OFF,
    ALL_KEYS,
    K_AD,
    K_AD_IDENTITIES,
    K_AD_LAMBDA,
    K_ADAPTER,
    K_ADAPTER_HASH,
    K_EDITS,
    K_FACE,
    K_IDENTITY,
    K_IDENTITY_HASH,
    K_LAMBDA,
    K_MIX,
    K_START,
    PHOTO_LABEL,
    PREFIX,
    SEED_LABEL,
    GenerationInfo,
    format_mix,
    params,
    source_label,
)
from wplus.stylegan import edit_text
from wplus.stylegan.edit_text import format_edits  # noqa: F401
from wplus.webui.options import OPTION, SAME_SCALE, MixMode, PanelArgs, Source, check_edits


def parse_edits(text: str) -> dict[str, float]:
    """The edits of a pasted infotext (parts that do not parse are skipped)."""
    return edit_text.parse_edits(text, strict=False)


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
