"""`download`: the model files into the models folder (progress, resume, sha256 check), or `--check`."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from wplus.assets import registry
from wplus.assets.download import downloads_disabled, ensure_file, find_existing
from wplus.cli.parser import add_models, models_dir, offline_cause


def add_parser(sub: Any, prog: str) -> argparse.ArgumentParser:
    dl = sub.add_parser("download", help="fetch the model files (with progress, resume, sha256 check)",
                        description="Download the files the extension needs into the models folder.")
    dl.add_argument("--what", default="all", choices=("all", "adapter", "e4e", "directions", "faces", "training"),
                    help="which files (default: all but the training-only ones)")
    dl.add_argument("--check", action="store_true",
                    help="only report which files are present (exit status 2 when any is missing)")
    add_models(dl)
    dl.set_defaults(run=run, prog=prog)
    return dl


def run(args: argparse.Namespace, e4e_loader: Callable[[], Any] | None = None) -> int:
    models = models_dir(args)
    entries = registry.select(args.what)
    offline = args.no_download or downloads_disabled()
    missing = 0
    for entry in entries:
        where = find_existing(entry, models)
        if args.check or offline:
            state = f"ok       {where}" if where else f"MISSING  {entry.path(models)}  <- {entry.url}"
            print(f"{entry.key:45s} {state}")
            missing += where is None
            continue
        path = ensure_file(entry, models, allow_download=True)
        print(f"{entry.key:45s} ok       {path}")
    if missing:
        how = (f"run `{args.prog} download --what {args.what}` to fetch them" if args.check and not offline
               else f"{offline_cause(args)}; download them by hand from the URLs above")
        print(f"error: {missing} of {len(entries)} file(s) missing; {how}.", file=sys.stderr)
        return 2
    return 0
