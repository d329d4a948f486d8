"""`directions`: the edit directions by group, with their ranges and the W+ layers they edit."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable

from wplus.assets import registry
from wplus.assets.download import downloads_disabled, find_existing
from wplus.cli.parser import add_models, models_dir, offline_cause
from wplus.errors import WPlusError


def add_parser(sub: Any, prog: str) -> argparse.ArgumentParser:
    dr = sub.add_parser("directions", help="list the edit directions, by group",
                        description="List the edit directions: name, group, slider range, suggested strength.")
    dr.add_argument("--group", default=None, help="only this group (e.g. expression, pose)")
    add_models(dr)
    dr.set_defaults(run=run, prog=prog)
    return dr


def run(args: argparse.Namespace, e4e_loader: Callable[[], Any] | None = None) -> int:
    # torch-based, as in cmd_invert
    from wplus.stylegan.direction_names import sort_key
    from wplus.stylegan.directions import USER_SUBDIR, DirectionLibrary, default_library

    models = models_dir(args)
    missing = [e for e in registry.direction_files() if find_existing(e, models) is None]
    offline = bool(missing) and (args.no_download or downloads_disabled())
    if offline:  # list what is there and what the missing files will add, then name every missing file
        folder = models / registry.DIRECTIONS_SUBDIR
        present = DirectionLibrary.from_folders(folder if folder.is_dir() else None, models / USER_SUBDIR)
        rows = _direction_rows(present, {e.key for e in missing})
    else:
        rows = [(d.group, d.name, d) for d in default_library(models, allow_download=not args.no_download)]
    groups = sorted({g for g, _, _ in rows}, key=lambda g: sort_key(g, ""))
    if args.group is not None and args.group not in groups:
        raise WPlusError(f"no group {args.group!r}; groups: {', '.join(groups)}")
    for group in groups:
        if args.group is not None and group != args.group:
            continue
        print(f"{group}:")
        for _, name, d in sorted((r for r in rows if r[0] == group), key=lambda r: r[1]):
            print(f"  {name:28s} " + (d if isinstance(d, str) else
                  f"{d.source:12s} range {d.minimum:g}..{d.maximum:g}  suggested {d.suggested:g}  "
                  f"({d.layers_text})"))
    absent = sum(isinstance(d, str) for _, _, d in rows)
    print(f"{len(rows)} directions" + (f", {absent} not usable until the files below are there" if absent else "")
          + ". Use: --edit NAME=STRENGTH (0 = no change).")
    if not offline:
        return 0
    folder = (models / registry.DIRECTIONS_SUBDIR).resolve()
    lines = [f"error: {len(missing)} of {len(registry.direction_files())} edit-direction files are missing "
             f"and {offline_cause(args)}:"]
    lines += [f"  {e.filename}  <- {e.url}" for e in missing]
    lines.append(f"Put them in the folder {folder}{os.sep} (keeping the sub-folders shown), or run "
                 "`{args.prog} download --what directions`.")
    print("\n".join(lines), file=sys.stderr)
    return 2


def _direction_rows(present: Any, missing_keys: set[str]) -> list[tuple[str, str, Any]]:
    """(group, name, Direction or why it is unusable) for the paper's edits (from the registry,
    named as they will be once complete) and the user's own."""
    from wplus.stylegan.direction_names import assign_names, group_of

    official = registry.official_directions()
    known = {f"{source}/{stem}" for source, stem, _ in official}
    others = [d for d in present if d.key not in known]  # the user's, or rows of an edited GANSpace table
    pairs = [(s, stem) for s, stem, _ in official] + [tuple(d.key.split("/", 1)) for d in others]
    names = {item: name for name, _, item in assign_names(pairs)}
    rows: list[tuple[str, str, Any]] = []
    for source, stem, files in official:
        absent = [Path(f.filename).name for f in files if f.key in missing_keys]
        key = f"{source}/{stem}"
        state = (f"{source:12s} MISSING ({', '.join(absent)})" if absent else
                 present.get(key) if key in present else f"{source:12s} not in the local files")
        rows.append((group_of(stem), names[(source, stem)], state))
    rows += [(d.group, names[tuple(d.key.split("/", 1))], d) for d in others]
    return rows
