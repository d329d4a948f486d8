"""Fetch registry files: progress, resume into `*.part`, sha256 check, atomic rename.

Nothing is downloaded unless asked for by a caller that allows it; offline (or with downloads
disabled) the user gets one message saying which file, from where, and into which folder.
"""
from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, Optional

from tqdm import tqdm

from wplus.assets.atomic import new_folders
from wplus.assets.fingerprint import CHUNK, cached_sha256, sha256_file
from wplus.assets.registry import ModelFile, default_models_dir, missing_message
from wplus.errors import DownloadError, MissingWeightsError

ProgressCallback = Callable[[int, Optional[int]], None]  # (bytes done, total bytes or None)
Opener = Callable[..., object]  # urllib.request.urlopen-like: opener(request, timeout=...)

TIMEOUT_S = 30.0


OFFLINE_VARIABLES = ("WPLUS_OFFLINE", "HF_HUB_OFFLINE")


def offline_variable() -> str:
    """The variable that disables downloads, as set ("HF_HUB_OFFLINE=1"), or "" when none is."""
    for name in OFFLINE_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.lower() in ("1", "true", "yes"):
            return f"{name}={value}"
    return ""


def downloads_disabled() -> bool:
    """`WPLUS_OFFLINE=1` (or HF_HUB_OFFLINE=1, which WebUI users already set) disables downloads."""
    return bool(offline_variable())


def find_existing(entry: ModelFile, models_dir: str | os.PathLike,
                  search_dirs: Iterable[str | os.PathLike] = ()) -> Path | None:
    """The first present copy: our models folder, the WebUI's folders (`alt_subdirs`), extra dirs."""
    name = Path(entry.filename).name
    candidates = [entry.path(models_dir)]
    candidates += [Path(models_dir) / sub / name for sub in entry.alt_subdirs]
    candidates += [Path(d) / name for d in search_dirs]
    for path in candidates:
        if path.is_file():
            return path
    return None


def check_hash(entry: ModelFile, path: Path) -> None:
    if entry.sha256 is None:
        return
    actual = cached_sha256(path)
    if actual != entry.sha256:
        raise DownloadError(
            f"{path} is not the expected {entry.filename!r}: sha256 {actual} != {entry.sha256}. "
            f"Delete it and let it download again, or replace it with the file from {entry.url}."
        )


def ensure_file(
    entry: ModelFile,
    models_dir: str | os.PathLike | None = None,
    allow_download: bool = True,
    progress: bool | ProgressCallback = True,
    callback: ProgressCallback | None = None,
    opener: Opener | None = None,
    search_dirs: Iterable[str | os.PathLike] = (),
) -> Path:
    """Path of a verified local copy of `entry`, downloading it first if allowed.

    progress: True for a tqdm bar on stderr, or a callable(done, total) (then no bar); callback:
    an extra callable(done, total), e.g. for a UI progress element."""
    if callable(progress):
        progress, callback = False, _both(progress, callback)
    models_dir = Path(models_dir) if models_dir is not None else default_models_dir()
    existing = find_existing(entry, models_dir, search_dirs)
    if existing is not None:
        check_hash(entry, existing)
        return existing
    if not allow_download or downloads_disabled():
        variable = offline_variable()
        reason = f"automatic download is disabled by the environment variable {variable}" if variable else \
            "automatic download is disabled"
        raise MissingWeightsError(missing_message(entry, models_dir, reason))
    return download(entry, models_dir, progress=progress, callback=callback, opener=opener)


def _both(a: ProgressCallback, b: ProgressCallback | None) -> ProgressCallback:
    if b is None:
        return a
    return lambda done, total: (a(done, total), b(done, total))


def download(
    entry: ModelFile,
    models_dir: str | os.PathLike,
    progress: bool = True,
    callback: ProgressCallback | None = None,
    opener: Opener | None = None,
) -> Path:
    """Download into `<target>.part` (resuming what is there), verify, then rename atomically."""
    target = entry.path(models_dir)
    part = target.with_name(target.name + ".part")
    with new_folders(target.parent):  # a failed download leaves no empty folder behind
        try:
            _fetch_into(entry, part, progress, callback, opener or urllib.request.urlopen)
        except BaseException as exc:  # also Ctrl-C: an empty .part is nothing to resume from
            if part.is_file() and part.stat().st_size == 0:
                part.unlink()
            if isinstance(exc, (urllib.error.URLError, OSError, TimeoutError)):
                raise _failed(entry, models_dir, exc) from exc
            raise
        _verify_part(entry, part)
        os.replace(part, target)
    return target


def _failed(entry: ModelFile, models_dir: str | os.PathLike, exc: BaseException) -> Exception:
    if isinstance(exc, urllib.error.HTTPError) and exc.code not in (408, 429, 500, 502, 503, 504):
        return DownloadError(f"Downloading {entry.filename!r} from {entry.url} failed: HTTP {exc.code}. "
                             + missing_message(entry, models_dir, "the download failed"))
    reason = getattr(exc, "reason", None) or exc
    return MissingWeightsError(missing_message(entry, models_dir, f"the download failed ({reason})"))


def _verify_part(entry: ModelFile, part: Path) -> None:
    size = part.stat().st_size
    if entry.size is not None and size != entry.size:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"Downloaded {entry.filename!r} has {size} bytes, expected {entry.size}; the partial file was "
            f"deleted. Try again, or fetch it by hand from {entry.url}."
        )
    if entry.sha256 is not None:
        actual = sha256_file(part)
        if actual != entry.sha256:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"Downloaded {entry.filename!r} from {entry.url} is corrupt or changed upstream: sha256 "
                f"{actual} != expected {entry.sha256}. The file was deleted; try again."
            )


def _fetch_into(entry: ModelFile, part: Path, progress: bool, callback: ProgressCallback | None,
                opener: Opener) -> None:
    have = part.stat().st_size if part.exists() else 0
    if entry.size is not None and have > entry.size:
        part.unlink()
        have = 0
    headers = {"User-Agent": "sd-webui-wplus"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(entry.url, headers=headers)
    try:
        response = opener(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the .part is complete
            return
        raise
    with response:
        status = getattr(response, "status", None) or response.getcode()
        if status != 206:  # the server ignored the range: start over
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else entry.size
        _stream(response, part, have, total, entry, progress, callback)


def _stream(response, part: Path, have: int, total: int | None, entry: ModelFile, progress: bool,
            callback: ProgressCallback | None) -> None:
    bar = None
    if progress:
        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=Path(entry.filename).name, file=sys.stderr, leave=False)
    done = have
    try:
        with open(part, "ab" if have else "wb") as f:
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                f.write(block)
                done += len(block)
                if bar is not None:
                    bar.update(len(block))
                if callback is not None:
                    callback(done, total)
    finally:
        if bar is not None:
            bar.close()
    if total is not None and done < total:
        raise OSError(f"connection closed after {done} of {total} bytes (the partial download is kept for resume)")


def ensure_many(
    entries: Iterable[ModelFile],
    models_dir: str | os.PathLike | None = None,
    allow_download: bool = True,
    progress: bool = True,
    callback: Callable[[ModelFile, int, Optional[int]], None] | None = None,
    opener: Opener | None = None,
) -> list[Path]:
    """`ensure_file` for several entries; the callback also receives the entry."""
    paths = []
    for entry in entries:
        cb = (lambda done, total, e=entry: callback(e, done, total)) if callback else None
        paths.append(ensure_file(entry, models_dir, allow_download, progress, cb, opener))
    return paths
