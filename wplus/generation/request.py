"""One generation's identity work, as every host describes it: the request.

The WebUI panel, its API dict, X/Y/Z cells, the command line and the ComfyUI nodes each read their
own inputs into a `Request`; `wplus.generation.resolve` turns it into W+ codes and an adapter,
`wplus.generation.schedule` into λ per step. Fields are declared here, in the schema's order
(`wplus.generation.options.OPTIONS`, which is also the WebUI's positional order); their defaults,
limits, labels and keys live in the schema, once.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from wplus.generation.options import OPTION, MixMode, Source


def _default(name: str) -> Any:
    return OPTION[name].default


@dataclass
class Request:
    """The values of one generation's identity options, one field per option, then the edits."""

    enabled: bool = _default("enabled")
    source: Source = _default("source")  # the first identity: photo, saved identity or seed
    reference: Any = _default("reference")  # photo(s): path, bytes, base64, PIL image, or a list
    identity: str = _default("identity")  # a saved identity's name (hosts that take paths say so)
    face_index: int = _default("face_index")  # -1: the largest face
    seed: int = _default("seed")
    source2: Source = _default("source2")  # the second identity to mix in (NONE: no mixing)
    reference2: Any = _default("reference2")
    identity2: str = _default("identity2")
    seed2: int = _default("seed2")
    mix_mode: MixMode = _default("mix_mode")
    mix: float = _default("mix")  # the second identity's weight on the whole code
    mix_coarse: float = _default("mix_coarse")  # ... or per style group
    mix_middle: float = _default("mix_middle")
    mix_fine: float = _default("mix_fine")
    scale: float = _default("scale")  # λ
    start: float = _default("start")  # percent of the steps before the identity is injected
    adapter: str = _default("adapter")  # adapter file name ("": the host's choice rule)
    more_references: Any = _default("more_references")  # more photos of the first identity's person
    ad_enabled: bool = _default("ad_enabled")  # the branch in ADetailer's face pass
    ad_scale: float = _default("ad_scale")  # λ there (SAME_SCALE: `scale`)
    ad_identities: str = _default("ad_identities")  # one saved identity per face: "alice, bob"
    edits: dict[str, float] = field(default_factory=dict)  # direction name -> strength

    def mix_weights(self) -> float | tuple[float, float, float]:
        """Weight of the second identity: one number, or (coarse, middle, fine)."""
        if self.mix_mode == MixMode.PER_GROUP:
            return (self.mix_coarse, self.mix_middle, self.mix_fine)
        return self.mix

    def active_edits(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.edits.items() if v}

    def face_pass_scale(self) -> float:
        """λ in ADetailer's face pass (SAME_SCALE: the panel's λ)."""
        return self.scale if self.ad_scale < 0 else self.ad_scale


def field_names() -> tuple[str, ...]:
    """The request's fields in declaration order (a test holds them to the schema's order)."""
    return tuple(f.name for f in fields(Request))
