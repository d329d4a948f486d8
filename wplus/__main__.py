"""Command line: `python -m wplus generate …`, `invert PHOTO`, `download`, `directions`.

Exit codes: 0 done, 2 a problem with the input or a missing file (the message says what to do).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from PIL import Image

from wplus.assets import registry
from wplus.assets.download import downloads_disabled, ensure_file, find_existing, offline_variable
from wplus.assets.fingerprint import file_tag
from wplus.assets.registry import missing_message
from wplus.errors import MissingWeightsError, WPlusError
from wplus.stylegan.edit_text import format_edits, parse_edits

EXAMPLES = """examples:
  python -m wplus generate --photo me.jpg --prompt "a woman wearing a spacesuit" -o out.png
  python -m wplus invert photo.jpg -o alice --preview alice.png
  python -m wplus invert group.jpg --face-index 1 --edit smile=2 --edit age=-1
  python -m wplus directions
  python -m wplus download --what directions
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wplus",
        description="W+ adapter tools: turn a photo into an editable identity, fetch models, list edits.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    inv = sub.add_parser(
        "invert", help="photo -> identity file (W+ code) and a preview",
        description="Detect the faces in PHOTO, align and encode one with e4e into W+, save it as "
                    "models/identities/NAME.safetensors and write a preview (aligned face | "
                    "StyleGAN reconstruction | edited).",
        epilog="Faces are numbered left to right; without --face-index the largest is used.",
    )
    inv.add_argument("photo", nargs="+", help="the reference photo (JPEG, PNG, WebP...); several photos of the "
                     "same person give one identity, the mean of their W+ codes")
    inv.add_argument("-o", "--name", help="identity name (default: the photo's file name)")
    inv.add_argument("--face-index", type=int, default=None, metavar="I",
                     help="which face, 0 = leftmost (default: the largest)")
    inv.add_argument("--backend", default="dlib", choices=("dlib", "facexlib", "auto"),
                     help="face detector/aligner (default: dlib, fully offline)")
    inv.add_argument("--edit", action="append", default=[], metavar="NAME=S",
                     help="apply an edit direction, e.g. smile=2 (repeatable; see `directions`)")
    inv.add_argument("--preview", type=Path, default=None, metavar="PNG",
                     help="where to write the preview (default: next to the identity file)")
    inv.add_argument("--no-preview", action="store_true", help="skip rendering the preview")
    _common(inv)
    inv.add_argument("--e4e", type=Path, default=None, metavar="PATH",
                     help="e4e checkpoint (default: MODELS/e4e_ffhq_encode.pt, downloaded if missing)")
    inv.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    inv.add_argument("--no-cache", action="store_true", help="encode even if this face was encoded before")

    dl = sub.add_parser("download", help="fetch the model files (with progress, resume, sha256 check)",
                        description="Download the files the extension needs into the models folder.")
    dl.add_argument("--what", default="all", choices=("all", "adapter", "e4e", "directions", "faces", "training"),
                    help="which files (default: all but the training-only ones)")
    dl.add_argument("--check", action="store_true",
                    help="only report which files are present (exit status 2 when any is missing)")
    _common(dl)

    from wplus.pipeline.cli import add_parser as add_generate

    add_generate(sub)

    dr = sub.add_parser("directions", help="list the edit directions, by group",
                        description="List the edit directions: name, group, slider range, suggested strength.")
    dr.add_argument("--group", default=None, help="only this group (e.g. expression, pose)")
    _common(dr)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", type=Path, default=None, metavar="DIR",
                   help="models folder (default: $WPLUS_MODELS_DIR or the extension's models/)")
    p.add_argument("--no-download", action="store_true",
                   help="never download; fail with a message saying where to put the missing file")


def main(argv: Sequence[str] | None = None, e4e_loader: Callable[[], Any] | None = None) -> int:
    """`e4e_loader` replaces the checkpoint loader (tests, or a host that already holds e4e)."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "invert":
            return cmd_invert(args, e4e_loader)
        if args.command == "generate":
            from wplus.pipeline.cli import main as cmd_generate

            return cmd_generate(args, e4e_loader)
        if args.command == "download":
            return cmd_download(args)
        return cmd_directions(args)
    except WPlusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _models(args: argparse.Namespace) -> Path:
    return args.models if args.models is not None else registry.default_models_dir()


def cmd_invert(args: argparse.Namespace, e4e_loader: Callable[[], Any] | None) -> int:
    # torch-based modules: imported by the commands that use them, so `download` and --help stay light
    from wplus.identity.cache import default_cache
    from wplus.identity.encoder import IdentityEncoder, faces_table, mean_identity, normalize_image
    from wplus.identity.files import save_identity
    from wplus.stylegan.directions import apply_edits, default_library

    models = _models(args)
    images = [normalize_image(p) for p in args.photo]  # the user's inputs first: a typo must not ask for the 1 GB e4e
    edits = parse_edits(args.edit)
    library = default_library(models, allow_download=not args.no_download) if edits else None
    if library is not None:
        for name in edits:
            library.get(name)  # unknown names fail before any heavy work
    tag = ""
    if e4e_loader is None:
        e4e_loader, tag = _checkpoint_loader(args, models)
    cache = None if args.no_cache else default_cache(models)
    encoder = IdentityEncoder(e4e_loader, cache=cache, keep_loaded=True, encoder_tag=tag)
    photos = list(args.photo)
    name = args.name or Path(photos[0]).stem
    try:
        parts = []
        for photo, image in zip(photos, images):
            start = time.perf_counter()
            runs = encoder.encode_count
            part = encoder.encode(image, face_index=args.face_index, backend=args.backend, name=name)
            how = "encoded" if encoder.encode_count > runs else "from cache"
            n = len(part.faces)
            print(f"{n} face{'s' if n != 1 else ''} found in {photo} (left to right):")
            print(faces_table(part.faces, part.face_index))
            print(f"W+ {how} in {time.perf_counter() - start:.2f} s (backend {part.backend})")
            parts.append(part)
        identity = parts[0]
        if len(parts) > 1:
            identity = mean_identity(parts, name=name, labels=[Path(p).name for p in photos])
            print(f"identity = mean of the W+ codes of {len(parts)} photos")
        if edits:
            identity.wplus_unedited = identity.wplus.clone()
            identity.wplus = apply_edits(identity.wplus, edits, library)
            identity.edits = format_edits(edits)
            print(f"edits: {identity.edits}")
        path = save_identity(identity, name, folder=models / "identities")
        print(f"identity saved: {path}")
        if not args.no_preview:
            preview = args.preview or path.with_suffix(".png")
            write_preview(encoder.e4e, identity, preview)
            print(f"preview saved: {preview}")
    finally:
        encoder.release()
    return 0


def _checkpoint_loader(args: argparse.Namespace, models: Path) -> tuple[Callable[[], Any], str]:
    """Resolve the e4e file now (fail fast, download if allowed); load it only when needed.

    The tag names the file version as the WebUI does (`file_tag`), so both share the identity cache."""
    path = args.e4e
    if path is None:
        path = ensure_file(registry.get("e4e"), models, allow_download=not args.no_download)
    if not Path(path).is_file():
        raise MissingWeightsError(missing_message(registry.get("e4e"), None, "the file given with --e4e does not exist",
                                                  path=path))
    device = args.device

    def load() -> Any:
        import torch  # torch and the e4e model code load only when a face is really encoded

        from wplus.stylegan.e4e import load_e4e

        return load_e4e(str(path), device=device or ("cuda" if torch.cuda.is_available() else "cpu"))

    return load, file_tag(path)


def write_preview(e4e: Any, identity: Any, out: Path, size: int = 256) -> Path:
    """One strip: aligned face | StyleGAN reconstruction | edited (when edits were applied)."""
    import torch  # torch-based, as in cmd_invert

    from wplus.stylegan.pixels import to_pil

    codes = [identity.wplus_unedited if identity.wplus_unedited is not None else identity.wplus]
    if identity.wplus_unedited is not None:
        codes.append(identity.wplus)
    with torch.no_grad():
        images = e4e.render(torch.stack(codes))
    panels = [identity.thumbnail] if identity.thumbnail is not None else []
    panels += to_pil(images)
    strip = Image.new("RGB", (size * len(panels), size), "white")
    for i, panel in enumerate(panels):
        strip.paste(panel.convert("RGB").resize((size, size), Image.Resampling.LANCZOS), (i * size, 0))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    strip.save(out)
    return out


def cmd_download(args: argparse.Namespace) -> int:
    models = _models(args)
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
        how = (f"run `python -m wplus download --what {args.what}` to fetch them" if args.check and not offline
               else f"{_offline_cause(args)}; download them by hand from the URLs above")
        print(f"error: {missing} of {len(entries)} file(s) missing; {how}.", file=sys.stderr)
        return 2
    return 0


def _offline_cause(args: argparse.Namespace) -> str:
    if args.no_download:
        return "--no-download was given"
    return f"downloads are disabled by the environment ({offline_variable()} is set)"


def cmd_directions(args: argparse.Namespace) -> int:
    # torch-based, as in cmd_invert
    from wplus.stylegan.direction_names import sort_key
    from wplus.stylegan.directions import USER_SUBDIR, DirectionLibrary, default_library

    models = _models(args)
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
             f"and {_offline_cause(args)}:"]
    lines += [f"  {e.filename}  <- {e.url}" for e in missing]
    lines.append(f"Put them in the folder {folder}{os.sep} (keeping the sub-folders shown), or run "
                 "`python -m wplus download --what directions`.")
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



if __name__ == "__main__":
    sys.exit(main())
