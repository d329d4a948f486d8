"""The command line's flags, each defined once: the commands add the groups they take."""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from wplus.errors import WPlusError
from wplus.generation.options import OPTION

FACE_BACKENDS = ("dlib", "facexlib", "auto")


def prog_name() -> str:
    """The command as the user typed it: `wplus` (the console script) or `python -m wplus`."""
    name = os.path.basename(sys.argv[0] or "")
    return "wplus" if name.split(".")[0] == "wplus" else "python -m wplus"


def add_models(p: argparse.ArgumentParser) -> None:
    from wplus.assets.registry import MODELS_DIR_RULE

    p.add_argument("--models", type=Path, default=None, metavar="DIR",
                   help="models folder (default: " + MODELS_DIR_RULE.replace("%", "%%") + ")")  # argparse formats %
    p.add_argument("--no-download", action="store_true",
                   help="never download; fail with a message naming every missing file and where to put it")


def add_face(p: argparse.ArgumentParser, with_photo: str = "") -> None:
    p.add_argument("--face-index", type=int, default=None, metavar="I",
                   help=f"{with_photo}which face, 0 = leftmost (default: the largest)")
    p.add_argument("--backend", default="dlib", choices=FACE_BACKENDS,
                   help="face detector/aligner (default: dlib, fully offline)")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")


def add_edit(p: argparse.ArgumentParser, lists: bool) -> None:
    if lists:
        p.add_argument("--edit", action="append", default=[], metavar="NAME=S[,S...]",
                       help="edit direction strength(s), repeatable; a list makes a grid row per value "
                            "(see `directions`)")
    else:
        p.add_argument("--edit", action="append", default=[], metavar="NAME=S",
                       help="apply an edit direction, e.g. smile=2 (repeatable; see `directions`)")


def check_flag(option_name: str, value: Any, flag: str) -> Any:
    """`value` checked by the option schema (the WebUI's limits), the error naming the flag."""
    return replace(OPTION[option_name], api_key=flag).check(value)


def models_dir(args: argparse.Namespace) -> Path:
    from wplus.assets.registry import default_models_dir

    return args.models if args.models is not None else default_models_dir()


def offline_cause(args: argparse.Namespace) -> str:
    from wplus.assets.download import offline_variable

    if args.no_download:
        return "--no-download was given"
    return f"downloads are disabled by the environment ({offline_variable()} is set)"


def read_photo(path: Path | str, flag: str = "photo"):
    """A photo the user named, decoded now (before any weights are looked for); a folder, a missing
    or an unreadable file is named as such."""
    from wplus.faces.image import normalize_image

    path = Path(path)
    if path.is_dir():
        raise WPlusError(f"{flag} {path}: is a folder, not a photo; give an image file (JPEG, PNG, WebP...)")
    if not path.exists():
        raise WPlusError(f"{flag} {path}: no such file")
    if not os.access(path, os.R_OK):
        raise WPlusError(f"{flag} {path}: the file cannot be read (permission denied)")
    return normalize_image(path)


def check_edit_names(edits: dict[str, float], library: Any) -> dict[str, float]:
    """Edit names known to the library (else suggestions) and strengths within each direction's
    range (the WebUI's slider limits: `wplus.generation.options.check_edits`)."""
    from wplus.generation.options import edit_option

    out = {}
    for name, value in edits.items():
        direction = library.get(name)
        option = edit_option(name, direction.minimum, direction.maximum)
        out[name] = replace(option, api_key=f"--edit {name}").check(value)
    return out
