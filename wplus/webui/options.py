"""The WebUI's side of the option schema: positional script args and X/Y/Z overrides.

The WebUI hands an always-visible script the values of the components its `ui()` returned, in
that order, as positional args (also to the API, which fills them positionally). That order is
the schema's (`wplus.generation.options.OPTIONS`): the fixed fields, then one strength per edit
direction. The schema and the request are re-exported here for the WebUI glue.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from wplus.generation.options import (  # noqa: F401  (the schema, for the WebUI glue)
    EDIT_LIMIT,
    EDITS,
    FIXED_FIELDS,
    INFOTEXT_KEYS,
    INFOTEXT_PREFIX,
    MIX_MODES,
    OPTION,
    OPTIONS,
    RECORDED_KEYS,
    SAME_SCALE,
    SOURCES,
    SOURCES2,
    WARNING_KEY,
    MixMode,
    Option,
    OptionError,
    Source,
    check_edits,
    edit_option,
)
from wplus.generation.request import Request

PanelArgs = Request  # the panel's values are a generation request


def to_values(args: PanelArgs, direction_names: Sequence[str]) -> list:
    """Positional values for the script: fixed fields, then each direction's strength."""
    return [getattr(args, name) for name in FIXED_FIELDS] + [float(args.edits.get(n, 0.0)) for n in direction_names]


def from_values(values: Sequence[Any], direction_names: Sequence[str],
                limits: Mapping[str, tuple[float, float]] | None = None) -> PanelArgs:
    """Inverse of `to_values`, every value checked (gradio hands back floats from Number fields,
    None for an empty field: the option's default)."""
    values = list(values)
    if not values:  # the host had no values for the script yet (a request while the WebUI starts): off
        return PanelArgs()
    n_fixed = len(FIXED_FIELDS)
    if len(values) < n_fixed:
        raise OptionError(f"W+ Adapter: the panel passes {n_fixed + len(direction_names)} values; got {len(values)}")
    kwargs = {o.name: o.default if v is None else o.check(v) for o, v in zip(OPTIONS, values[:n_fixed])}
    strengths = values[n_fixed:n_fixed + len(direction_names)]
    kwargs["edits"] = check_edits({n: 0.0 if v is None else v for n, v in zip(direction_names, strengths)}, limits)
    return PanelArgs(**kwargs)


XYZ_ATTR = "wplus_xyz"  # on the processing object: X/Y/Z axis values for this cell


def apply_xyz(request: PanelArgs, overrides: dict | None,
              limits: Mapping[str, tuple[float, float]] | None = None) -> PanelArgs:
    """X/Y/Z axis values (option names with an axis, or "edit:<name>") replace panel values and
    enable the branch (an identity axis is a complete request on its own)."""
    if not overrides:
        return request
    request.enabled = True
    for key, value in overrides.items():
        if key.startswith("edit:"):
            request.edits = {**request.edits, **check_edits({key[5:]: value}, limits)}
        elif key in OPTION and OPTION[key].xyz_label:
            setattr(request, key, OPTION[key].check(value))
            if key == "identity":
                request.source = Source.SAVED
        else:
            raise OptionError(f"W+ Adapter: unknown X/Y/Z override {key!r}")
    return request
