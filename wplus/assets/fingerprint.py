"""Which version of a local file this is: by name, size and modification time (cheap), or by content.

Every cache of something loaded or computed from a model file (the adapter, the e4e encoder tag of
the identity cache, verified download hashes) names the file version the same way, so the CLI and
the WebUI agree on it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHUNK = 1 << 20
_sha256: dict[tuple[str, int, int], str] = {}  # stat_key -> sha256, per process


def stat_key(path: str | os.PathLike) -> tuple[str, int, int]:
    """(resolved path, size, mtime_ns): changes whenever the file is replaced or rewritten."""
    path = Path(path)
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def file_tag(path: str | os.PathLike) -> str:
    """`name:size:mtime_ns`, or the bare name for a file that is not there (yet)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return path.name
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def cached_sha256(path: str | os.PathLike) -> str:
    """`sha256_file`, computed once per file version in this process."""
    key = stat_key(path)
    if key not in _sha256:
        _sha256[key] = sha256_file(path)
    return _sha256[key]
