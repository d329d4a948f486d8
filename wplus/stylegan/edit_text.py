"""Edits as text, `smile=2; age=-1`: the one form written to identity files and the infotext.

Older identity files made by the CLI separate edits with ',' (`smile=2, age=-1`); both separators
are read. ';' is what is written: the WebUI's infotext quotes values that contain ','.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from wplus.errors import DirectionError

SEPARATOR = "; "
_SPLIT = re.compile(r"[;,]")


def format_edits(edits: Mapping[str, float]) -> str:
    """{'smile': 2.0, 'age': -1.0} -> 'smile=2; age=-1' (strength 0 is no edit and is left out)."""
    return SEPARATOR.join(f"{name}={float(s):g}" for name, s in edits.items() if s)


def parse_edits(text: str | Iterable[str], strict: bool = True) -> dict[str, float]:
    """'smile=2; age=-1', 'smile=2, age=-1' or ['smile=2', 'age=-1'] -> {'smile': 2.0, 'age': -1.0}.

    strict (the CLI): a part that is not NAME=STRENGTH raises DirectionError; otherwise (pasted
    infotext) it is skipped."""
    items = [text] if isinstance(text, str) else list(text)
    edits: dict[str, float] = {}
    for item in items:
        for part in _SPLIT.split(str(item)):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.rpartition("=")
            try:
                strength = float(value)
            except ValueError:
                strength = None
            if strength is None or not sep or not name.strip():
                if strict:
                    raise DirectionError(f"bad edit {part!r}: write NAME=STRENGTH, e.g. smile=2 or age=-1")
                continue
            edits[name.strip()] = strength
    return edits
