"""The identity cache: a content-hash key (pixels, face index, backend, encoder) -> Identity, memory LRU + disk."""
from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

from wplus.errors import IdentityFormatError
from wplus.identity.files import (
    Identity,
    _load_safetensors,
    identities_dir,
    save_identity,
)

CACHE_VERSION = "1"  # bump when preprocessing changes so old cache entries stop matching


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
