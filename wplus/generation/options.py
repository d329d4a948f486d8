"""Every W+ option of a generation, defined once: the schema every host builds its inputs from.

The WebUI panel, its API dict, the infotext, the X/Y/Z axes, the positional script args, the
JavaScript hints/reset values, the command line's checks and the ComfyUI nodes all read it. Each
`Option` holds its type, default, limits (checked the same way for every entry point by
`Option.check`), UI label, slider range and hint, API key and aliases, infotext key and X/Y/Z axis
label. `OPTIONS`' order is the WebUI's positional order (the fixed fields, then one strength per
edit direction) and the field order of `wplus.generation.request.Request`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping

from wplus.errors import WPlusError
from wplus.geometry import STYLE_GROUPS


class Source(str, Enum):
    """Where an identity comes from (the str value is what the panel shows and the API sends)."""

    NONE = "None"  # second identity only: no mixing
    PHOTO = "Photo"
    SAVED = "Saved identity"
    SEED = "Random (seed)"

    def __str__(self) -> str:
        return self.value


class MixMode(str, Enum):
    GLOBAL = "Global"
    PER_GROUP = "Per layer group"

    def __str__(self) -> str:
        return self.value


SOURCES = (Source.PHOTO, Source.SAVED, Source.SEED)
SAME_SCALE = -1.0  # ad_scale: ADetailer's face pass uses the panel's λ
SOURCES2 = (Source.NONE,) + SOURCES
MIX_MODES = tuple(MixMode)


class OptionError(WPlusError, ValueError):
    """A value of the wrong type or outside its option's limits; the same message whichever entry
    point (panel values, API dict, pasted infotext, X/Y/Z axis) it came from."""


_WHAT = {"bool": "true or false", "int": "an integer", "float": "a number", "text": "a string"}


@dataclass(frozen=True)
class Option:
    name: str  # field of PanelArgs (edit directions: "edit:<direction>")
    kind: str  # "bool", "int", "float", "choice", "text", "image"
    default: Any
    label: str = ""  # the panel's label (the accordion says "W+ Adapter" once)
    hint: str = ""  # hover text (served to javascript/wplus.js)
    minimum: float | None = None  # limits for every entry point
    maximum: float | None = None
    slider: tuple[float, float] | None = None  # the slider's range when narrower than the limits
    step: float | None = None
    choices: tuple = ()
    api_key: str | None = None  # key in the API dict ("mix_with.seed": inside "mix_with")
    api_aliases: tuple[str, ...] = ()
    what: str = ""  # what a valid value is, for the type error ("a file name (string)")
    infotext_key: str | None = None
    xyz_label: str | None = None  # "[W+] <label>" axis in the X/Y/Z plot
    resettable: bool = False  # double-click on the slider's label resets it to the default

    @property
    def key(self) -> str:
        """The name every error message uses (the API's key where there is one)."""
        return self.api_key or self.name

    @property
    def ui_range(self) -> tuple[float, float]:
        return self.slider or (self.minimum, self.maximum)

    @property
    def reset(self) -> Any:
        """The JavaScript's double-click reset value (None: not resettable)."""
        return self.default if self.resettable else None

    def check(self, value: Any) -> Any:
        """`value` as this option's type, or OptionError (the one validation for every entry point)."""
        if self.kind == "image":
            return value
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise self.error(f"must be {self.what or _WHAT['bool']}")
        if self.kind == "choice":
            for choice in self.choices:
                if value == choice:
                    return choice
            raise self.error(f"must be one of {[str(c) for c in self.choices]}; got {value!r}")
        if self.kind == "text":
            if isinstance(value, str):
                return value
            raise self.error(f"must be {self.what or _WHAT['text']}")
        number = self._number(value)
        lo, hi = self.minimum, self.maximum
        if (lo is not None and number < lo) or (hi is not None and number > hi):
            limits = f"between {lo:g} and {hi:g}" if lo is not None and hi is not None else (
                f">= {lo:g}" if lo is not None else f"<= {hi:g}")
            raise self.error(f"must be {limits}; {number:g} is outside that range")
        return number

    def _number(self, value: Any) -> int | float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(f"must be {self.what or _WHAT[self.kind]}; got {value!r}")
        if not math.isfinite(value):
            raise self.error(f"must be a finite number; got {value!r}")
        if self.kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise self.error(f"must be {_WHAT['int']}; got {value!r}")
            return int(value)
        return float(value)

    def from_text(self, text: Any) -> Any:
        """An infotext value (text) checked like any other entry point's."""
        if self.kind in ("int", "float"):
            try:
                value: Any = float(str(text).strip())
            except ValueError:
                return self.check(str(text))  # the same "must be a number" as any other entry point
            return self.check(int(value) if self.kind == "int" and value.is_integer() else value)
        return self.check(str(text))

    def error(self, problem: str) -> OptionError:
        return OptionError(f"W+ Adapter: '{self.key}' {problem}")


_MIX_HINT = "Second identity's weight on {}: 0 = first identity only, 1 = second only. Double-click to reset."


def _layers(group: str) -> str:
    return f"{group} layers {STYLE_GROUPS[group].start}-{STYLE_GROUPS[group].stop - 1}"


OPTIONS: tuple[Option, ...] = (
    Option("enabled", "bool", False, label="Enable W+ Adapter", api_key="enabled",
           hint="Turn the W+ identity branch on. Off: generation is exactly as without the extension."),
    Option("source", "choice", Source.PHOTO, label="Identity source", choices=SOURCES, infotext_key="Wplus identity",
           hint="Where the identity comes from: a reference photo, an identity saved earlier, or a new fictional "
                "person from a seed."),
    Option("reference", "image", None, label="Reference photo", api_key="reference",
           what="a base64 string",
           hint="A photo of the person. The face is detected, aligned like FFHQ, its background removed, then "
                "encoded by e4e into StyleGAN's W+ space."),
    Option("identity", "text", "", label="Saved identity", api_key="identity", what="a saved identity's name",
           xyz_label="Identity",
           hint="An identity saved from this panel (models/identities). Also accepts the paper's N.pth W+ files."),
    Option("face_index", "int", -1, label="Face index (-1: the largest face)", minimum=-1, step=1,
           api_key="face_index",
           infotext_key="Wplus face",
           hint="Which face to use when the photo has several: -1 = the largest, 0 = leftmost, 1 = next to the "
                "right..."),
    Option("seed", "int", 0, label="Identity seed", minimum=0, api_key="seed",
           hint="Seed of a fictional identity drawn from StyleGAN's mapping network."),
    Option("source2", "choice", Source.NONE, label="Second identity", choices=SOURCES2, api_key="mix_with",
           infotext_key="Wplus mix", hint="Optionally blend in a second identity."),
    Option("reference2", "image", None, label="Second photo", api_key="mix_with.reference", what="a base64 string",
           hint="Photo of the second identity (its largest face)."),
    Option("identity2", "text", "", label="Second saved identity", api_key="mix_with.identity",
           what="a saved identity's name", hint="Saved second identity."),
    Option("seed2", "int", 0, label="Second identity seed", minimum=0, api_key="mix_with.seed",
           hint="Seed of a fictional second identity."),
    Option("mix_mode", "choice", MixMode.GLOBAL, label="Mix mode", choices=MIX_MODES,
           hint="Global: one weight for the whole code. Per layer group: StyleGAN style mixing (coarse = pose and "
                "face shape, middle = features, fine = colours and details)."),
    Option("mix", "float", 0.5, label="Mix", minimum=0.0, maximum=1.0, step=0.05, api_key="mix", resettable=True,
           hint=_MIX_HINT.format("the whole code")),
    Option("mix_coarse", "float", 0.5, label="Mix coarse (pose, shape)", minimum=0.0, maximum=1.0, step=0.05,
           api_key="mix", resettable=True, hint=_MIX_HINT.format(_layers("coarse") + " (pose, face shape)")),
    Option("mix_middle", "float", 0.5, label="Mix middle (features)", minimum=0.0, maximum=1.0, step=0.05,
           api_key="mix", resettable=True, hint=_MIX_HINT.format(_layers("middle") + " (facial features)")),
    Option("mix_fine", "float", 0.5, label="Mix fine (colours, details)", minimum=0.0, maximum=1.0, step=0.05,
           api_key="mix", resettable=True, hint=_MIX_HINT.format(_layers("fine") + " (colours, micro details)")),
    Option("scale", "float", 1.0, label="Identity strength (λ)", minimum=0.0, maximum=4.0, slider=(0.0, 2.0),
           step=0.05, api_key="scale", api_aliases=("lambda",), infotext_key="Wplus lambda",
           xyz_label="Identity strength (λ)", resettable=True,
           hint="λ: how strongly the identity is injected (0 = off, 1 = the paper's default). Lower it if the face "
                "overrides the prompt's style. The API and X/Y/Z accept up to 4. Double-click to reset."),
    Option("start", "float", 20.0, label="Start at step (%)", minimum=0.0, maximum=100.0, step=1, api_key="start",
           infotext_key="Wplus start", xyz_label="Start at step (%)", resettable=True,
           hint="Delayed subject conditioning: the branch is off while the step is at or before this percentage of "
                "the steps, so the text lays out the scene first. Double-click to reset."),
    Option("adapter", "text", "", label="Adapter file", api_key="adapter", what="a file name (string)",
           infotext_key="Wplus adapter", xyz_label="Adapter",
           hint="The W+ adapter weights (models folder). The default downloads on first use."),
    # several photos of one person (the API sends them as a "reference" list)
    Option("more_references", "image", None, label="Photos to average with the one above",
           hint="More photos of the same person: each is aligned and encoded once, and the identity is the mean "
                "of their W+ codes (steadier than one photo)."),
    # ADetailer's face pass (see wplus.webui.passes)
    Option("ad_enabled", "bool", True, label="Use in ADetailer's face pass", api_key="adetailer.enabled",
           infotext_key="Wplus ADetailer",
           hint="Run the W+ branch in ADetailer's face pass too (its inpaint of each detected face, from the pass's "
                "first step). The W+ script is added to ADetailer's script list for this generation only."),
    Option("ad_scale", "float", SAME_SCALE, label="λ in the face pass (-1: the λ above)", minimum=SAME_SCALE,
           maximum=4.0, slider=(SAME_SCALE, 2.0), step=0.05, api_key="adetailer.scale",
           api_aliases=("adetailer.lambda",), infotext_key="Wplus ADetailer lambda", xyz_label="ADetailer λ",
           resettable=True, hint="λ in ADetailer's face pass; -1 = the same λ as above. Double-click to reset."),
    Option("ad_identities", "text", "", label="Identity per face", api_key="adetailer.identities",
           what="saved identity names ('alice, bob', or a list of names)", infotext_key="Wplus face identities",
           xyz_label="Identity per face",
           hint="One saved identity per face, in the order ADetailer inpaints them: 'alice, bob'. '*' = the "
                "identity above, '-' = no W+ for that face; a face beyond the list gets no W+. Empty: every face "
                "gets the identity above. In an X/Y/Z cell write alice|bob."),
)
OPTION: dict[str, Option] = {o.name: o for o in OPTIONS}
FIXED_FIELDS: tuple[str, ...] = tuple(o.name for o in OPTIONS)

EDITS = Option("edits", "float", 0.0, api_key="edits", infotext_key="Wplus edits", xyz_label="Edit {label}",
               resettable=True, what="a number",
               hint="Edit direction in StyleGAN's W+ space; 0 = no edit. The scene stays the same, only the face "
                    "changes. Double-click to reset.")
EDIT_LIMIT = 100.0  # strengths of directions the caller's catalog does not know (its own ranges apply otherwise)

# infotext keys that record what a generation used rather than restore an option
INFOTEXT_PREFIX = "Wplus"
RECORDED_KEYS = ("Wplus identity hash", "Wplus adapter hash")
WARNING_KEY = "Wplus warning"
INFOTEXT_KEYS: tuple[str, ...] = tuple(o.infotext_key for o in (*OPTIONS, EDITS) if o.infotext_key) + RECORDED_KEYS


def edit_option(name: str, minimum: float = -EDIT_LIMIT, maximum: float = EDIT_LIMIT, label: str = "",
                hint: str = "") -> Option:
    """The option of one edit direction's strength (its slider range is its limit everywhere)."""
    return Option(f"edit:{name}", "float", EDITS.default, label=label or name, hint=hint or EDITS.hint,
                  minimum=minimum, maximum=maximum, api_key=f"{EDITS.api_key}.{name}", resettable=True,
                  xyz_label=EDITS.xyz_label.format(label=label or name))


def check_edits(edits: Mapping[str, Any], limits: Mapping[str, tuple[float, float]] | None = None) -> dict[str, float]:
    """Edit strengths checked against their direction's range (EDIT_LIMIT for unknown names)."""
    limits = limits or {}
    return {str(k): edit_option(str(k), *limits.get(str(k), (-EDIT_LIMIT, EDIT_LIMIT))).check(v)
            for k, v in edits.items()}
