"""The W+ panel's values as one dataclass, in the order the WebUI passes them to the script.

The WebUI hands an always-visible script the values of the components its `ui()` returned, in
that order, as positional args (also to the API, which fills them positionally). The order is
defined once here: the fixed fields, then one strength per edit direction.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Sequence

SOURCES = ("Photo", "Saved identity", "Random (seed)")
SOURCES2 = ("None",) + SOURCES
MIX_MODES = ("Global", "Per layer group")
SCALE_RANGE = (0.0, 2.0)
SCALE_LIMIT = 4.0  # the API and X/Y/Z may go past the slider
DEFAULT_SCALE = 1.0
DEFAULT_START = 20.0  # percent of sampling steps


@dataclass
class PanelArgs:
    enabled: bool = False
    source: str = SOURCES[0]
    reference: Any = None
    identity: str = ""
    face_index: int = -1  # -1: the largest face; 0.. faces left to right
    seed: int = 0
    source2: str = "None"
    reference2: Any = None
    identity2: str = ""
    seed2: int = 0
    mix_mode: str = MIX_MODES[0]
    mix: float = 0.5
    mix_coarse: float = 0.5
    mix_middle: float = 0.5
    mix_fine: float = 0.5
    scale: float = DEFAULT_SCALE
    start: float = DEFAULT_START
    adapter: str = ""  # adapter file name; "" = the default adapter
    edits: dict[str, float] = field(default_factory=dict)

    def mix_weights(self) -> float | tuple[float, float, float]:
        """Weight of the second identity: one number, or (coarse, middle, fine)."""
        if self.mix_mode == MIX_MODES[1]:
            return (self.mix_coarse, self.mix_middle, self.mix_fine)
        return self.mix

    def active_edits(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.edits.items() if v}


FIXED_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(PanelArgs) if f.name != "edits")
_INT_FIELDS = {"face_index", "seed", "seed2"}
_FLOAT_FIELDS = {"mix", "mix_coarse", "mix_middle", "mix_fine", "scale", "start"}


def to_values(args: PanelArgs, direction_names: Sequence[str]) -> list:
    """Positional values for the script: fixed fields, then each direction's strength."""
    return [getattr(args, name) for name in FIXED_FIELDS] + [float(args.edits.get(n, 0.0)) for n in direction_names]


def from_values(values: Sequence[Any], direction_names: Sequence[str]) -> PanelArgs:
    """Inverse of `to_values`; tolerates gradio's types (floats from Number, None for empty)."""
    values = list(values)
    n_fixed = len(FIXED_FIELDS)
    if len(values) < n_fixed:
        raise ValueError(f"the W+ panel passes {n_fixed + len(direction_names)} values; got {len(values)}")
    kwargs = {}
    for name, value in zip(FIXED_FIELDS, values[:n_fixed]):
        kwargs[name] = _coerce(name, value)
    strengths = values[n_fixed:n_fixed + len(direction_names)]
    kwargs["edits"] = {n: float(v or 0.0) for n, v in zip(direction_names, strengths)}
    return PanelArgs(**kwargs)


def _coerce(name: str, value: Any) -> Any:
    default = PanelArgs.__dataclass_fields__[name].default
    if value is None:
        return default
    if name == "enabled":
        return bool(value)
    if name in _INT_FIELDS:
        return int(float(value))
    if name in _FLOAT_FIELDS:
        return float(value)
    if name in ("identity", "identity2", "adapter"):
        return str(value or "")
    return value


XYZ_ATTR = "wplus_xyz"  # on the processing object: X/Y/Z axis values for this cell


def apply_xyz(request: PanelArgs, overrides: dict | None) -> PanelArgs:
    """X/Y/Z axis values (keys scale, start, identity, adapter, "edit:<name>") replace panel values
    and enable the branch (an identity axis is a complete request on its own)."""
    if not overrides:
        return request
    request.enabled = True
    for key, value in overrides.items():
        if key == "scale":
            request.scale = float(value)
        elif key == "start":
            request.start = float(value)
        elif key == "identity":
            request.source, request.identity = SOURCES[1], str(value)
        elif key == "adapter":
            request.adapter = str(value)
        elif key.startswith("edit:"):
            request.edits = {**request.edits, key[5:]: float(value)}
        else:
            raise ValueError(f"unknown W+ X/Y/Z override {key!r}")
    return request
