"""A request's identity -> its W+ code: photos (several: their mean), a saved identity, a seed, a
second identity mixed in, edits; e4e loaded on demand and the content-hash cache shared between
generations. One resolver for every host (the WebUI keeps one per models folder; the command line
one per run). Adapters: `wplus.generation.adapters`.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from wplus.errors import MissingWeightsError, WPlusError
from wplus.generation.options import Source
from wplus.generation.photos import decode_photo, reference_list
from wplus.generation.record import GenerationInfo, code_hash, source_label
from wplus.generation.request import Request
from wplus.generation.settings import Settings
from wplus.geometry import STYLE_GROUPS, WPLUS_SHAPE

NO_PHOTO = "W+: no reference photo. Upload a photo of the person, choose a saved identity, or disable the W+ Adapter."


@dataclass
class ResolvedIdentity:
    wplus: torch.Tensor  # (1,18,512) float32 on CPU, edits and mixing applied
    info: GenerationInfo
    thumbnail: Any = None  # the aligned face, when encoded from a photo
    sources: list = field(default_factory=list)  # one entry per photo when several were averaged
    notes: list[str] = field(default_factory=list)  # what was done, for a console ("W+ of … encoded in 0.4 s")


@dataclass
class _Part:
    """One identity source's code, before mixing and edits."""

    wplus: torch.Tensor  # (1,18,512)
    thumbnail: Any = None
    sources: list = field(default_factory=list)
    label: str = ""


class IdentityResolver:
    """Request -> W+ code. `allow_paths`: saved identities may be given as file paths (the command
    line and Python users); hosts that take names from clients (the WebUI, its API, the nodes) keep
    it off, so a request never reads a file outside the identities folder."""

    def __init__(self, settings: Settings, e4e_loader: Callable[[], Any] | None = None,
                 encoder_tag: str | None = None, allow_paths: bool = False, device: str | None = None):
        from wplus.identity.cache import default_cache
        from wplus.identity.encoder import IdentityEncoder, default_e4e_loader, default_encoder_tag

        self.settings, self.allow_paths = settings, allow_paths
        folder = settings.models_dir
        loader = e4e_loader or default_e4e_loader(folder, allow_download=settings.auto_download, device=device)
        tag = encoder_tag if encoder_tag is not None else default_encoder_tag(folder)
        cache = default_cache(folder, max_items=max(1, settings.cache_size))
        cache.max_items = max(1, settings.cache_size)
        self.encoder = IdentityEncoder(loader, cache=cache, keep_loaded=not settings.unload_encoder, encoder_tag=tag)
        self._lock = threading.Lock()

    def resolve(self, request: Request) -> ResolvedIdentity:
        with self._lock:
            try:
                return self._resolve(request)
            except MissingWeightsError as e:
                raise name_download_cause(e, self.settings) from e
            finally:
                if self.settings.unload_encoder:
                    self.encoder.release()

    def preview(self, request: Request) -> tuple[ResolvedIdentity, Any]:
        """(identity, StyleGAN rendering of its code as a PIL image), loading e4e once for both."""
        with self._lock:  # the panel's buttons run beside generations: never release e4e mid-use
            keep, self.encoder.keep_loaded = self.encoder.keep_loaded, True
            try:
                resolved = self._resolve(request)
                return resolved, self._render(resolved.wplus)
            finally:
                self.encoder.keep_loaded = keep
                if self.settings.unload_encoder:
                    self.encoder.release()

    def render(self, w: torch.Tensor) -> Any:
        """StyleGAN's rendering of a W+ code as a PIL image."""
        with self._lock:
            try:
                return self._render(w)
            finally:
                if self.settings.unload_encoder:
                    self.encoder.release()

    def release(self) -> None:
        """Free e4e now (a host about to sample keeps only the adapter in memory)."""
        self.encoder.release()

    def _render(self, w: torch.Tensor) -> Any:
        from wplus.stylegan.pixels import to_pil

        with torch.no_grad():
            return to_pil(self.encoder.e4e.render(w.reshape(1, *WPLUS_SHAPE)))[0]

    def _resolve(self, request: Request) -> ResolvedIdentity:
        check_sources(request)
        notes: list[str] = []
        first = self._one(request.source, [request.reference, *reference_list(request.more_references)],
                          request.identity, request.seed, request.face_index, notes)
        w, mix_label, weights = first.wplus, "", None
        if request.source2 != Source.NONE:
            second = self._one(request.source2, request.reference2, request.identity2, request.seed2, -1, notes)
            weights = request.mix_weights()
            w, mix_label = mix_codes(w, second.wplus, weights), second.label
        edits = request.active_edits()
        if edits:
            w = self.edit(w, edits)
        info = GenerationInfo(
            identity_label=first.label, identity_hash=code_hash(w), scale=request.scale, start=request.start,
            adapter_name="", adapter_hash="", face_index=request.face_index, edits=edits, mix_label=mix_label,
            mix_weights=weights,
        )
        return ResolvedIdentity(w.float().cpu(), info, first.thumbnail, first.sources, notes)

    def _one(self, source: str, reference: Any, identity: str, seed: int, face_index: int,
             notes: list[str]) -> _Part:
        """The (1,18,512) code of one identity source; several photos give their mean."""
        if source == Source.SAVED:
            return self._saved(identity)
        if source == Source.SEED:
            with torch.no_grad():
                w = self.encoder.e4e.map_seed(int(seed))
            return _Part(w.float().cpu().reshape(1, *WPLUS_SHAPE), label=source_label(source, "", seed))
        photos = reference_list(reference)
        images = [decode_photo(r) for r in photos]
        if not images:
            raise WPlusError(NO_PHOTO)
        index = None if face_index is None or face_index < 0 else int(face_index)
        start, runs = time.perf_counter(), self.encoder.encode_count
        ident = self.encoder.encode_many(images, face_index=index, backend=self.settings.face_backend)
        how = "encoded" if self.encoder.encode_count > runs else "from cache"
        notes.append(f"W+ of {_photo_names(photos)} {how} in {time.perf_counter() - start:.2f} s "
                     f"(face {ident.face_index}, {len(ident.faces)} found)")
        return _Part(ident.batch(dtype=torch.float32), ident.thumbnail, ident.sources, source_label(source, "", 0))

    def _saved(self, name: str) -> _Part:
        from wplus.identity.files import identities_dir, load_identity

        ident = load_identity(name, identities_dir(self.settings.models_dir), allow_paths=self.allow_paths)
        label = (ident.name or Path(name).stem) if self.allow_paths and Path(name).name != name else name
        return _Part(ident.batch(dtype=torch.float32), ident.thumbnail, ident.sources, label)

    def edit(self, w: torch.Tensor, edits: dict[str, float]) -> torch.Tensor:
        """`w` moved along the named edit directions (unknown names fail with suggestions)."""
        from wplus.stylegan.directions import apply_edits

        return apply_edits(w, edits, self.directions())

    def directions(self) -> Any:
        """The edit-direction library of the models folder (downloaded when allowed)."""
        from wplus.stylegan.directions import default_library

        return default_library(self.settings.models_dir, allow_download=self.settings.auto_download)


def check_sources(request: Request) -> None:
    """What the user can fix in their inputs, checked before any file is looked for: an empty source."""
    if request.source == Source.PHOTO and request.reference is None and not reference_list(request.more_references):
        raise WPlusError(NO_PHOTO)
    if request.source == Source.SAVED and not request.identity:
        raise WPlusError("W+: choose a saved identity (or switch the source to Photo)")
    if request.source2 == Source.PHOTO and request.reference2 is None:
        raise WPlusError("W+: no second reference photo. Upload one, or set the second identity to None.")
    if request.source2 == Source.SAVED and not request.identity2:
        raise WPlusError("W+: choose the second saved identity (or set the second identity to None)")


def name_download_cause(error: MissingWeightsError, settings: Settings) -> MissingWeightsError:
    """The missing-file message, naming what kept the file from downloading: the download module
    names an offline environment variable itself; a host's own switch only the host knows."""
    if settings.auto_download:
        return error
    return MissingWeightsError(f"{error} (Downloads are off: {settings.download_blocker()}.)")


def mix_codes(w1: torch.Tensor, w2: torch.Tensor, weights: float | tuple[float, float, float]) -> torch.Tensor:
    """The second code's share: one weight, or (coarse, middle, fine) per style group."""
    from wplus.stylegan.directions import mix

    if isinstance(weights, tuple):
        weights = dict(zip(STYLE_GROUPS, weights))
    return mix(w1, w2, weights)


def _photo_names(photos: list) -> str:
    names = [str(p) if isinstance(p, Path) else "the photo" for p in photos]
    return names[0] if len(names) == 1 else f"{len(names)} photos"
