"""Identities: a W+ code with where it came from, saved by name, and encoded at most once.

An identity file is a `.safetensors` in `models/identities/`:
  tensors  `wplus` (18,512) float32, optional `thumbnail` (H,W,3) uint8 (the aligned face),
           optional `wplus_unedited` (18,512) when edits were baked in;
  metadata format=wplus-identity, version, name, image_hash, backend, created (ISO 8601 UTC),
           face_index, faces (JSON boxes), source, edits.
The paper's `N.pth` files (a (1,18,512) tensor) load as identities too.

`encode_reference` runs face preparation + e4e, and a content-hash cache (memory LRU + disk) keyed
by (pixels, face index, backend, encoder) makes the second request for the same face free.
"""
from __future__ import annotations

import datetime as _dt
import gc
import hashlib
import json
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from .pickles import load_pickle
from .errors import IdentityFormatError, IdentityNotFoundError, WPlusError

FORMAT = "wplus-identity"
VERSION = "1"
CACHE_VERSION = "1"  # bump when preprocessing changes so old cache entries stop matching
THUMBNAIL_SIZE = 256
SUFFIXES = (".safetensors", ".pth", ".pt")


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
        raise IdentityFormatError(f"{origin}: expected a W+ tensor (18,512), found {type(t).__name__}")
    t = t.detach().cpu()
    if tuple(t.shape) not in ((18, 512), (1, 18, 512)) or not torch.is_floating_point(t):
        raise IdentityFormatError(f"{origin}: a W+ code must be a float tensor of shape (18,512) or (1,18,512), got {t.dtype} {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise IdentityFormatError(f"{origin}: the W+ code holds NaN or infinite values")
    return t.reshape(18, 512).to(torch.float32).contiguous()


# --- names and folders ---------------------------------------------------------------------------


def identities_dir(models_dir: str | os.PathLike | None = None) -> Path:
    from .registry import IDENTITIES_SUBDIR, default_models_dir

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
        f"No identity called {name!r} in {folder}. Saved identities: {listing}. "
        f"Create one with `python -m wplus invert PHOTO -o {safe_name(name)}`."
    )


# --- save / load ---------------------------------------------------------------------------------


def save_identity(identity: Identity, name: str | None = None, folder: str | os.PathLike | None = None, path: str | os.PathLike | None = None) -> Path:
    """Write `<folder>/<name>.safetensors` (atomically) and return its path."""
    from safetensors.torch import save_file

    if path is None:
        folder = Path(folder) if folder is not None else identities_dir()
        path = folder / f"{safe_name(name or identity.name)}.safetensors"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def load_identity(name_or_path: str | os.PathLike, folder: str | os.PathLike | None = None) -> Identity:
    """By name from the identities folder, or from a path (ours, or an official `N.pth`)."""
    path = Path(name_or_path)
    if not (path.suffix in SUFFIXES and path.is_file()):
        path = identity_path(str(name_or_path), folder)
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    return _load_pickle(path)


def _load_pickle(path: Path) -> Identity:
    try:
        obj = load_pickle(path)
    except Exception as exc:
        raise IdentityFormatError(f"{path} is not a W+ file torch can load safely ({exc})") from None
    if isinstance(obj, dict):
        obj = next((obj[k] for k in ("wplus", "latent", "w", "latents") if k in obj), obj)
    code = _as_code(obj, str(path))
    return Identity(wplus=code, name=path.stem, source="official .pth" if path.suffix == ".pth" else "torch file",
                    created=_mtime_iso(path))


def _load_safetensors(path: Path) -> Identity:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = set(f.keys())
            tensors = {k: f.get_tensor(k) for k in keys}
    except (SafetensorError, OSError, ValueError) as exc:
        raise IdentityFormatError(f"{path} is not a readable safetensors file ({exc}); re-create it with `python -m wplus invert`") from None
    if "wplus" not in tensors:
        if len(tensors) != 1:
            raise IdentityFormatError(f"{path} holds no 'wplus' tensor (found {sorted(keys)})")
        tensors["wplus"] = next(iter(tensors.values()))
    thumb = tensors.get("thumbnail")
    thumbnail = None
    if thumb is not None and thumb.dtype == torch.uint8 and thumb.dim() == 3 and thumb.shape[-1] == 3:
        thumbnail = Image.fromarray(thumb.numpy(), "RGB")
    try:
        faces = json.loads(meta.get("faces") or "[]")
    except json.JSONDecodeError:
        faces = []
    face_index = meta.get("face_index", "")
    return Identity(
        wplus=tensors["wplus"],
        name=meta.get("name") or path.stem,
        image_hash=meta.get("image_hash") or None,
        backend=meta.get("backend") or None,
        thumbnail=thumbnail,
        created=meta.get("created") or _mtime_iso(path),
        face_index=int(face_index) if face_index.lstrip("-").isdigit() else None,
        faces=faces if isinstance(faces, list) else [],
        source=meta.get("source") or "safetensors",
        edits=meta.get("edits", ""),
        wplus_unedited=tensors.get("wplus_unedited"),
    )


def delete_identity(name: str, folder: str | os.PathLike | None = None) -> None:
    identity_path(name, folder).unlink()


def _mtime_iso(path: Path) -> str:
    return _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc).isoformat(timespec="seconds")


# --- cache ---------------------------------------------------------------------------------------


def cache_key(image_hash: str, face_index: int | None, backend: str, encoder_tag: str = "") -> str:
    """Same pixels + same face + same backend + same encoder -> same key."""
    index = "auto" if face_index is None else str(int(face_index))
    text = f"v{CACHE_VERSION}|{image_hash}|{index}|{backend}|{encoder_tag}"
    return hashlib.sha256(text.encode()).hexdigest()


class IdentityCache:
    """Memory LRU (`max_items` entries) in front of an optional disk folder of identity files."""

    def __init__(self, max_items: int = 32, disk_dir: str | os.PathLike | None = None, max_disk_items: int = 512):
        self._items: OrderedDict[str, Identity] = OrderedDict()
        self._lock = threading.Lock()
        self.max_items = max_items
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None
        self.max_disk_items = max_disk_items  # ~0.25 MB each; the least recently written go first
        self.hits = 0
        self.misses = 0

    @property
    def max_items(self) -> int:
        return self._max_items

    @max_items.setter
    def max_items(self, value: int) -> None:
        """A settings change takes effect at once (the oldest entries are dropped)."""
        self._max_items = max(0, int(value))
        with self._lock:
            self._evict()

    def _evict(self) -> None:
        while len(self._items) > self._max_items:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> Identity | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
        if item is None and self.disk_dir is not None:
            path = self.disk_dir / f"{key}.safetensors"
            if path.is_file():
                try:
                    item = _load_safetensors(path)
                except IdentityFormatError:
                    path.unlink(missing_ok=True)  # a damaged entry is only a miss
                else:
                    self._remember(key, item)
        if item is None:
            self.misses += 1
            return None
        self.hits += 1
        return _copy(item)

    def put(self, key: str, identity: Identity) -> None:
        self._remember(key, _copy(identity))
        if self.disk_dir is not None:
            save_identity(identity, path=self.disk_dir / f"{key}.safetensors")
            self._prune_disk()

    def _prune_disk(self) -> None:
        entries = sorted(self.disk_dir.glob("*.safetensors"), key=lambda p: p.stat().st_mtime_ns)
        for path in entries[: max(0, len(entries) - self.max_disk_items)]:
            path.unlink(missing_ok=True)

    def _remember(self, key: str, identity: Identity) -> None:
        with self._lock:
            self._items[key] = identity
            self._items.move_to_end(key)
            self._evict()

    def clear(self, disk: bool = False) -> None:
        with self._lock:
            self._items.clear()
        if disk and self.disk_dir is not None and self.disk_dir.is_dir():
            for path in self.disk_dir.glob("*.safetensors"):
                path.unlink(missing_ok=True)


def _copy(identity: Identity) -> Identity:
    return replace(identity, wplus=identity.wplus.clone(), faces=[dict(f) for f in identity.faces])


def default_cache(models_dir: str | os.PathLike | None = None, max_items: int = 32) -> IdentityCache:
    """The shared cache: memory + `models/identities/.cache/`."""
    key = str(identities_dir(models_dir).resolve())
    with _caches_lock:
        cache = _caches.get(key)
        if cache is None:
            cache = _caches[key] = IdentityCache(max_items, identities_dir(models_dir) / ".cache")
        return cache


_caches: dict[str, IdentityCache] = {}
_caches_lock = threading.Lock()


# --- encoding ------------------------------------------------------------------------------------

E4ELoader = Callable[[], Any]  # returns an object with .encode(batch) -> (B,18,512)


def image_to_batch(image: Image.Image | np.ndarray | torch.Tensor, size: int = 256) -> torch.Tensor:
    """An RGB face crop -> (1,3,size,size) float32 in [-1,1], as e4e was trained."""
    if isinstance(image, torch.Tensor):
        t = image.detach().float()
        if t.dim() == 3:
            t = t.unsqueeze(0)
        if t.max() > 1.5:  # uint8-like values
            t = t / 127.5 - 1.0
        elif t.min() >= 0:
            t = t * 2.0 - 1.0
        if t.shape[-1] != size:
            t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return t
    from .e4e import to_input

    return to_input(image, size)


def _model_device_dtype(model: Any) -> tuple[torch.device, torch.dtype]:
    device, dtype = getattr(model, "device", None), getattr(model, "dtype", None)
    if isinstance(device, torch.device) and isinstance(dtype, torch.dtype):
        return device, dtype
    for holder in (getattr(model, "encoder", None), model):
        if isinstance(holder, torch.nn.Module):
            p = next(holder.parameters(), None)
            if p is not None:
                return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def _faces_summary(ref: Any) -> list[dict]:
    out = []
    for i, face in enumerate(getattr(ref, "faces", None) or []):
        box = getattr(face, "box", None)
        if box is None:
            continue
        out.append({"index": i, "box": [round(float(v), 1) for v in np.asarray(box).reshape(-1)[:4]]})
    return out


def _resolved_index(ref: Any) -> int | None:
    for attr in ("face_index", "index"):
        v = getattr(ref, attr, None)
        if isinstance(v, (int, np.integer)):
            return int(v)
    face, faces = getattr(ref, "face", None), getattr(ref, "faces", None)
    if face is not None and faces:
        for i, f in enumerate(faces):
            if f is face:
                return i
    return None


def _thumbnail(img: Any) -> Image.Image | None:
    if img is None:
        return None
    if isinstance(img, torch.Tensor):
        t = img.detach().float().cpu()
        t = t[0] if t.dim() == 4 else t
        arr = ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        img = Image.fromarray(arr, "RGB")
    elif isinstance(img, np.ndarray):
        img = Image.fromarray(img.astype(np.uint8))
    img = img.convert("RGB")
    return img if img.size == (THUMBNAIL_SIZE, THUMBNAIL_SIZE) else img.resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)


class IdentityEncoder:
    """Photo -> Identity with e4e loaded on demand and (by default) released after each use."""

    def __init__(self, e4e_loader: E4ELoader, cache: IdentityCache | None = None, keep_loaded: bool = False, encoder_tag: str = ""):
        self.e4e_loader = e4e_loader
        self.cache = cache
        self.keep_loaded = keep_loaded
        self.encoder_tag = encoder_tag
        self._e4e = None
        self.encode_count = 0  # real e4e runs (cache hits do not count)

    @property
    def e4e(self) -> Any:
        if self._e4e is None:
            self._e4e = self.e4e_loader()
        return self._e4e

    def release(self) -> None:
        """Drop e4e (about 1 GB) so only the adapter stays in memory during sampling."""
        model, self._e4e = self._e4e, None
        if model is None:
            return
        if callable(getattr(model, "release", None)):
            model.release()  # wplus.e4e.E4E drops its modules even if someone else holds the object
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def encode(self, image: Any, face_index: int | None = None, backend: str = "dlib", name: str = "") -> Identity:
        from .images import normalize_image

        norm = normalize_image(image)
        keys = [cache_key(norm.sha256, face_index, backend, self.encoder_tag)]
        if self.cache is not None:
            hit = self.cache.get(keys[0])
            if hit is not None:
                hit.name = name or hit.name
                return hit
        from .faces import prepare_reference

        ref = prepare_reference(norm, face_index=face_index, backend=backend, size=256)
        try:
            code = self._run_e4e(ref)
        finally:
            if not self.keep_loaded:
                self.release()
        resolved = _resolved_index(ref)
        identity = Identity(
            wplus=code, name=name, image_hash=norm.sha256, backend=getattr(ref, "backend", None) or backend,
            thumbnail=_thumbnail(getattr(ref, "aligned", None)),
            face_index=resolved if resolved is not None else face_index,
            faces=_faces_summary(ref),
        )
        if self.cache is not None:
            if face_index is None and identity.face_index is not None:
                keys.append(cache_key(norm.sha256, identity.face_index, backend, self.encoder_tag))
            for key in keys:
                self.cache.put(key, identity)
        return identity

    def _run_e4e(self, ref: Any) -> torch.Tensor:
        masked = getattr(ref, "masked", None)
        if masked is None:
            raise WPlusError("face preparation returned no masked face crop to encode")
        model = self.e4e
        device, dtype = _model_device_dtype(model)
        batch = image_to_batch(masked).to(device=device, dtype=dtype)
        with torch.no_grad():
            w = model.encode(batch)
        self.encode_count += 1
        return w[0].float().cpu()


def encode_reference(
    image: Any,
    face_index: int | None = None,
    backend: str = "dlib",
    e4e_loader: E4ELoader | None = None,
    cache: IdentityCache | None = None,
    release: bool = True,
    encoder_tag: str = "",
    name: str = "",
) -> Identity:
    """One-shot `IdentityEncoder(...).encode(...)`; `e4e_loader` defaults to the registry's e4e."""
    if e4e_loader is None:  # resolve (download) the checkpoint first: the cache key names that file
        e4e_loader = default_e4e_loader()
        encoder_tag = encoder_tag or default_encoder_tag(resolve=True)
    encoder = IdentityEncoder(e4e_loader, cache=cache, keep_loaded=not release, encoder_tag=encoder_tag)
    return encoder.encode(image, face_index=face_index, backend=backend, name=name)


def default_e4e_loader(models_dir: str | os.PathLike | None = None, allow_download: bool = True, device: str | torch.device | None = None) -> E4ELoader:
    """Loads `models/e4e_ffhq_encode.pt` (downloading it if allowed) when first called."""

    def load() -> Any:
        from . import registry
        from .download import ensure_file
        from .e4e import load_e4e

        path = ensure_file(registry.get("e4e"), models_dir, allow_download=allow_download)
        dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return load_e4e(str(path), device=dev)

    return load


def default_encoder_tag(models_dir: str | os.PathLike | None = None, resolve: bool = False, allow_download: bool = True) -> str:
    """Identifies the e4e weights by name, size and mtime, so swapping them invalidates the cache.

    resolve: make sure the file is there first (download it if allowed)."""
    from . import registry
    from .download import ensure_file

    if resolve:
        path = ensure_file(registry.get("e4e"), models_dir, allow_download=allow_download)
    else:
        path = registry.get("e4e").path(models_dir if models_dir is not None else registry.default_models_dir())
    try:
        st = path.stat()
        return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return path.name


def faces_table(faces: Sequence[dict], chosen: int | None = None) -> str:
    """Human-readable list of faces (for the CLI)."""
    lines = []
    for f in faces:
        x0, y0, x1, y1 = f["box"]
        mark = "  <- encoded" if f["index"] == chosen else ""
        lines.append(f"  [{f['index']}] box ({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f})  size {x1 - x0:.0f}x{y1 - y0:.0f}{mark}")
    return "\n".join(lines)
