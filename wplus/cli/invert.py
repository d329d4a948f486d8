"""`invert PHOTO…`: photo(s) -> an identity file (W+ code) in the identities folder, and a preview."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from wplus.assets import registry
from wplus.assets.download import ensure_file
from wplus.assets.fingerprint import file_tag
from wplus.assets.registry import missing_message
from wplus.cli.parser import (
    add_device,
    add_edit,
    add_face,
    add_models,
    check_edit_names,
    check_flag,
    models_dir,
    read_photo,
)
from wplus.errors import MissingWeightsError
from wplus.stylegan.edit_text import format_edits, parse_edits


def add_parser(sub: Any, prog: str) -> argparse.ArgumentParser:
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
    add_face(inv)
    add_edit(inv, lists=False)
    inv.add_argument("--preview", type=Path, default=None, metavar="PNG",
                     help="where to write the preview (default: next to the identity file)")
    inv.add_argument("--no-preview", action="store_true", help="skip rendering the preview")
    add_models(inv)
    inv.add_argument("--e4e", type=Path, default=None, metavar="PATH",
                     help="e4e checkpoint (default: MODELS/e4e_ffhq_encode.pt, downloaded if missing)")
    add_device(inv)
    inv.add_argument("--no-cache", action="store_true", help="encode even if this face was encoded before")
    inv.set_defaults(run=run, prog=prog)
    return inv


def run(args: argparse.Namespace, e4e_loader: Callable[[], Any] | None) -> int:
    # torch-based modules: imported by the commands that use them, so `download` and --help stay light
    from wplus.identity.cache import default_cache
    from wplus.identity.encoder import IdentityEncoder, faces_table, mean_identity
    from wplus.identity.files import save_identity
    from wplus.stylegan.directions import apply_edits, default_library

    models = models_dir(args)
    images = [read_photo(p) for p in args.photo]  # the user's inputs first: a typo must not ask for the 1 GB e4e
    if args.face_index is not None:
        check_flag("face_index", args.face_index, "--face-index")
    edits = parse_edits(args.edit)
    library = default_library(models, allow_download=not args.no_download) if edits else None
    if library is not None:
        check_edit_names(edits, library)  # unknown names and strengths out of range fail before heavy work
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
    import torch  # torch-based, as in run

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
