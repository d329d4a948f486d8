"""Identity files: a W+ code with where it came from, saved by name.

An identity file is a `.safetensors` in `models/identities/`:
  tensors  `wplus` (18,512) float32, optional `thumbnail` (H,W,3) uint8 (the aligned face),
           optional `wplus_unedited` (18,512) when edits were baked in;
  metadata format=wplus-identity, version, name, image_hash, backend, created (ISO 8601 UTC),
           face_index, faces (JSON boxes), source, edits, sources (JSON: one entry per photo when the code
           is the mean of several photos of one person: image_hash, face_index, backend, file name).
The paper's `N.pth` files (a (1,18,512) tensor) load as identities too.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from wplus.assets.atomic import atomic_path
from wplus.assets.io import (
    SAFETENSORS,
    check_tensor,
    existing_file,
    is_file,
    load_pickle,
    read_safetensors,
    short,
    sniff,
)
from wplus.assets.registry import IDENTITIES_SUBDIR, default_models_dir
from wplus.errors import IdentityFormatError, IdentityNotFoundError
from wplus.geometry import NUM_STYLES, STYLE_DIM, WPLUS_SHAPE

FORMAT = "wplus-identity"
VERSION = "1"
THUMBNAIL_SIZE = 256
SUFFIXES = (".safetensors", ".pth", ".pt")
MAX_NAME = 200  # longer strings are paths (or mistakes), never identity names


@dataclass
class Identity:
    """One person's W+ code (18,512) plus what is needed to show and reproduce it."""

    wplus: torch.Tensor
    name: str = ""
    image_hash: str | None = None
    backend: str | None = None
    thumbnail: Image.Image | None = None
    created: str = ""
    face_index: int | None = None
    faces: list[dict] = field(default_factory=list)  # every face found: {"index", "box"}
    source: str = "e4e"
    edits: str = ""
    wplus_unedited: torch.Tensor | None = None
    sources: list[dict] = field(default_factory=list)  # several photos averaged: one entry per photo

    def __post_init__(self) -> None:
        self.wplus = _as_code(self.wplus, self.name or "identity")
        if not self.created:
            self.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

    def batch(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """(1,18,512), ready for `apply_edits` / the adapter's projection."""
        return self.wplus.unsqueeze(0).to(device=device, dtype=dtype or self.wplus.dtype)


def _as_code(t: Any, origin: str) -> torch.Tensor:
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(t)
    if not isinstance(t, torch.Tensor):
        raise IdentityFormatError(f"{origin}: expected a W+ tensor ({NUM_STYLES},{STYLE_DIM}), "
                                  f"found {type(t).__name__}")
    if tuple(t.shape) not in (WPLUS_SHAPE, (1, *WPLUS_SHAPE)):
        raise IdentityFormatError(f"{origin}: a W+ code must be a float tensor of shape ({NUM_STYLES},{STYLE_DIM}) or "
                                  f"(1,{NUM_STYLES},{STYLE_DIM}), got {t.dtype} {tuple(t.shape)}")
    t = t.detach()
    if t.device.type not in ("cpu", "meta"):  # codes computed on a GPU; meta tensors hold no values
        t = t.cpu()
    try:
        t = check_tensor(t, "wplus", origin, IdentityFormatError)
    except IdentityFormatError as exc:
        raise IdentityFormatError(f"{exc} A W+ code must be a finite float tensor "
                                  f"({NUM_STYLES},{STYLE_DIM}).") from None
    return t.reshape(WPLUS_SHAPE).to(torch.float32).contiguous()


# --- names and folders ---------------------------------------------------------------------------


def identities_dir(models_dir: str | os.PathLike | None = None) -> Path:
    return Path(models_dir if models_dir is not None else default_models_dir()) / IDENTITIES_SUBDIR


def safe_name(name: str) -> str:
    """A file-system-safe identity name (no folders, no dots at the start)."""
    clean = re.sub(r"[^\w\- .]+", "_", str(name), flags=re.UNICODE).strip(" ._")
    if not clean:
        raise IdentityFormatError(f"{name!r} cannot be used as an identity name: use letters, digits, '-' or '_'")
    return clean[:120]


def list_identities(folder: str | os.PathLike | None = None) -> list[str]:
    folder = Path(folder) if folder is not None else identities_dir()
    if not folder.is_dir():
        return []
    names = {p.stem for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file() and not p.name.startswith(".")}
    return sorted(names, key=str.lower)


def identity_path(name: str, folder: str | os.PathLike | None = None) -> Path:
    folder = Path(folder) if folder is not None else identities_dir()
    for suffix in SUFFIXES:
        path = folder / f"{safe_name(name)}{suffix}"
        if path.is_file():
            return path
    known = list_identities(folder)
    listing = ", ".join(known[:20]) if known else "none yet"
    raise IdentityNotFoundError(
        f"No identity called {short(name, 80)!r} in {folder}. Saved identities: {listing}. "
        f"Create one with `python -m wplus invert PHOTO -o {safe_name(name)}`."
    )


# --- save / load ---------------------------------------------------------------------------------


def save_identity(identity: Identity, name: str | None = None, folder: str | os.PathLike | None = None,
                  path: str | os.PathLike | None = None) -> Path:
    """Write `<folder>/<name>.safetensors` (atomically) and return its path."""
    if path is None:
        folder = Path(folder) if folder is not None else identities_dir()
        path = folder / f"{safe_name(name or identity.name)}.safetensors"
    path = Path(path)
    tensors = {"wplus": identity.wplus.contiguous()}
    if identity.thumbnail is not None:
        tensors["thumbnail"] = torch.from_numpy(np.asarray(identity.thumbnail.convert("RGB"), dtype=np.uint8).copy())
    if identity.wplus_unedited is not None:
        tensors["wplus_unedited"] = _as_code(identity.wplus_unedited, "wplus_unedited")
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "name": name or identity.name or path.stem,
        "image_hash": identity.image_hash or "",
        "backend": identity.backend or "",
        "created": identity.created,
        "face_index": "" if identity.face_index is None else str(identity.face_index),
        "faces": json.dumps(identity.faces),
        "source": identity.source,
        "edits": identity.edits,
        "sources": json.dumps(identity.sources),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def check_identity_name(name: object) -> str:
    """`name` if it can only name a file in the identities folder, else an IdentityNotFoundError.

    For entry points that take names, never paths (the WebUI panel and API, nodes): refuses empty
    names, '..', absolute paths, path separators, NUL and names over MAX_NAME characters. The message
    depends on the name alone: it never tells whether some path exists."""
    if not isinstance(name, str):
        raise IdentityNotFoundError(f"An identity name must be a string, not a {type(name).__name__}.")
    why = None
    if not name.strip():
        why = "it is empty"
    elif len(name) > MAX_NAME:
        why = f"it is longer than {MAX_NAME} characters"
    elif "\0" in name:
        why = "it contains a NUL character"
    elif "/" in name or "\\" in name or os.path.isabs(name) or re.match(r"^[A-Za-z]:", name):
        why = "it is a path: it contains a folder separator or a drive"
    elif name.strip(" .") == "" or name.startswith(".."):
        why = "it names a folder ('.' or '..')"
    if why:
        raise IdentityNotFoundError(
            f"{short(name, 80)!r} is not an identity name ({why}): here identities are chosen by name from the "
            "identities folder (the list of saved identities); paths are not accepted.")
    return name


def load_identity(name_or_path: str | os.PathLike, folder: str | os.PathLike | None = None,
                  allow_paths: bool = True) -> Identity:
    """By name from the identities folder, or (allow_paths) from a path: ours, or an official `N.pth`.

    allow_paths=False takes names only (`check_identity_name`): the WebUI, its API and nodes pass
    it, so that a request can neither read a file outside the identities folder nor learn whether
    a path exists. The CLI and Python callers keep paths."""
    if allow_paths:
        path = _resolve(str(name_or_path), folder)
    else:
        path = identity_path(check_identity_name(name_or_path), folder)
    if sniff(path) == SAFETENSORS:
        return _load_safetensors(path)
    return _load_pickle(path)


def _resolve(text: str, folder: str | os.PathLike | None) -> Path:
    """A path (anything with a folder separator, too long for a name, or an identity file here) or a
    name from the folder; a name not found there that is a file here is read as a path."""
    path = Path(text)
    as_path = len(text) > MAX_NAME or "/" in text or os.sep in text or (path.suffix in SUFFIXES and is_file(path))
    if not as_path:
        try:
            return identity_path(text, folder)
        except IdentityNotFoundError:
            if not is_file(path):
                raise
    path = existing_file(path, "identity file", IdentityFormatError, missing=IdentityNotFoundError)
    if path.suffix.lower() not in SUFFIXES:
        raise IdentityFormatError(
            f"{short(path)} is not an identity file: identities are .safetensors files written by "
            "`wplus invert` (or the paper's .pth W+ codes). Make one from a photo with "
            "`python -m wplus invert PHOTO -o NAME`.")
    return path


def _load_pickle(path: Path) -> Identity:
    obj = load_pickle(path, "identity file", IdentityFormatError)
    if isinstance(obj, dict):
        obj = next((obj[k] for k in ("wplus", "latent", "w", "latents") if k in obj), obj)
    code = _as_code(obj, short(path))
    return Identity(wplus=code, name=path.stem, source="official .pth" if path.suffix == ".pth" else "torch file",
                    created=_mtime_iso(path))


def _load_safetensors(path: Path) -> Identity:
    tensors, meta = read_safetensors(path, "identity file", IdentityFormatError)
    keys = set(tensors)
    if "wplus" not in tensors:
        if len(tensors) != 1:
            raise IdentityFormatError(f"{short(path)} holds no 'wplus' tensor (found {sorted(keys)})")
        tensors["wplus"] = next(iter(tensors.values()))
    thumb = tensors.get("thumbnail")
    thumbnail = None
    if thumb is not None and thumb.dtype == torch.uint8 and thumb.dim() == 3 and thumb.shape[-1] == 3 \
            and min(thumb.shape[:2]) > 0:  # an empty (0×0) thumbnail is none (Pillow 9.5 cannot make one)
        thumbnail = Image.fromarray(np.ascontiguousarray(thumb.numpy()), "RGB")
    face_index = meta.get("face_index", "").strip()
    return Identity(
        wplus=_as_code(tensors["wplus"], short(path)),
        name=meta.get("name") or path.stem,
        image_hash=meta.get("image_hash") or None,
        backend=meta.get("backend") or None,
        thumbnail=thumbnail,
        created=meta.get("created") or _mtime_iso(path),
        face_index=int(face_index) if re.fullmatch(r"-?\d{1,6}", face_index) else None,
        faces=_json_dicts(meta.get("faces")),
        source=meta.get("source") or "safetensors",
        edits=meta.get("edits", ""),
        wplus_unedited=(_as_code(tensors["wplus_unedited"], f"{short(path)} (wplus_unedited)")
                        if "wplus_unedited" in tensors else None),
        sources=_json_dicts(meta.get("sources")),
    )


def _json_dicts(text: str | None) -> list[dict]:
    """The `faces` / `sources` metadata: a JSON list of dicts; anything else (or too deep, too long) reads as none."""
    if not text or len(text) > 1_000_000:
        return []
    try:
        faces = json.loads(text)
    except (ValueError, RecursionError):
        return []
    if not isinstance(faces, list):
        return []
    return [f for f in faces if isinstance(f, dict)]


def _mtime_iso(path: Path) -> str:
    return _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc).isoformat(timespec="seconds")
