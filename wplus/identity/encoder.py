"""Encoding a reference photo: face preparation + e4e, at most once per face (through the cache)."""
from __future__ import annotations

import gc
import os
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from wplus.assets import registry
from wplus.assets.download import ensure_file
from wplus.assets.fingerprint import file_tag
from wplus.errors import WPlusError
from wplus.faces.detect import prepare_reference
from wplus.faces.image import normalize_image
from wplus.identity.cache import IdentityCache, cache_key
from wplus.identity.files import THUMBNAIL_SIZE, Identity
from wplus.stylegan.e4e import load_e4e
from wplus.stylegan.pixels import to_input, to_pil

E4ELoader = Callable[[], Any]  # returns an object with .encode(batch) -> (B,18,512)


image_to_batch = to_input  # an RGB face crop -> (1,3,256,256) float32 in [-1,1], as e4e was trained


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
        img = to_pil(img[:1] if img.dim() == 4 else img)[0]
    elif isinstance(img, np.ndarray):
        img = Image.fromarray(img.astype(np.uint8))
    img = img.convert("RGB")
    size = (THUMBNAIL_SIZE, THUMBNAIL_SIZE)
    return img if img.size == size else img.resize(size, Image.Resampling.LANCZOS)


class IdentityEncoder:
    """Photo -> Identity with e4e loaded on demand and (by default) released after each use."""

    def __init__(self, e4e_loader: E4ELoader, cache: IdentityCache | None = None, keep_loaded: bool = False,
                 encoder_tag: str = ""):
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
            model.release()  # wplus.stylegan.e4e.E4E drops its modules even if someone else holds the object
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def encode(self, image: Any, face_index: int | None = None, backend: str = "dlib", name: str = "") -> Identity:
        norm = normalize_image(image)
        keys = [cache_key(norm.sha256, face_index, backend, self.encoder_tag)]
        if self.cache is not None:
            hit = self.cache.get(keys[0])
            if hit is not None:
                hit.name = name or hit.name
                return hit
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

    def encode_many(self, images: Sequence[Any], face_index: int | None = None, backend: str = "dlib",
                    name: str = "", labels: Sequence[str] = ()) -> Identity:
        """Several photos of one person -> one identity: the mean of their W+ codes.

        Each photo is aligned and encoded once (and cached like `encode`); the face index applies
        to every photo. The identity records each photo in `sources`; its thumbnail is the first's.
        """
        images = list(images)
        if not images:
            raise WPlusError("W+: no reference photos given")
        if len(images) == 1:
            return self.encode(images[0], face_index=face_index, backend=backend, name=name)
        keep, self.keep_loaded = self.keep_loaded, True  # load e4e once for all photos
        try:
            parts = [self.encode(image, face_index=face_index, backend=backend) for image in images]
        finally:
            self.keep_loaded = keep
            if not keep:
                self.release()
        return mean_identity(parts, name=name, labels=labels)

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


def mean_identity(parts: Sequence[Identity], name: str = "", labels: Sequence[str] = ()) -> Identity:
    """The mean W+ code of several identities of one person, recording where each came from."""
    if not parts:
        raise WPlusError("W+: no identities to average")
    code = torch.stack([p.wplus.float() for p in parts]).mean(0)
    sources = []
    for i, part in enumerate(parts):
        entry = {"image_hash": part.image_hash or "", "face_index": part.face_index, "backend": part.backend or ""}
        if i < len(labels) and labels[i]:
            entry["file"] = str(labels[i])
        sources.append(entry)
    first = parts[0]
    return Identity(wplus=code, name=name or first.name, image_hash=first.image_hash, backend=first.backend,
                    thumbnail=first.thumbnail, face_index=first.face_index, faces=first.faces,
                    source=f"mean of {len(parts)} photos", sources=sources)


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


def default_e4e_loader(models_dir: str | os.PathLike | None = None, allow_download: bool = True,
                       device: str | torch.device | None = None) -> E4ELoader:
    """Loads `models/e4e_ffhq_encode.pt` (downloading it if allowed) when first called."""

    def load() -> Any:
        path = ensure_file(registry.get("e4e"), models_dir, allow_download=allow_download)
        dev = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
        return load_e4e(str(path), device=dev)

    return load


def default_encoder_tag(models_dir: str | os.PathLike | None = None, resolve: bool = False,
                        allow_download: bool = True) -> str:
    """Identifies the e4e weights by name, size and mtime, so swapping them invalidates the cache.

    resolve: make sure the file is there first (download it if allowed). The CLI names an e4e file
    it was given the same way (`file_tag`), so both find each other's cache entries."""
    if resolve:
        path = ensure_file(registry.get("e4e"), models_dir, allow_download=allow_download)
    else:
        path = registry.get("e4e").path(models_dir if models_dir is not None else registry.default_models_dir())
    return file_tag(path)


def faces_table(faces: Sequence[dict], chosen: int | None = None) -> str:
    """Human-readable list of faces (for the CLI)."""
    lines = []
    for f in faces:
        x0, y0, x1, y1 = f["box"]
        mark = "  <- encoded" if f["index"] == chosen else ""
        lines.append(f"  [{f['index']}] box ({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f})  "
                     f"size {x1 - x0:.0f}x{y1 - y0:.0f}{mark}")
    return "\n".join(lines)
