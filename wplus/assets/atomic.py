"""Write a file so that readers see the old version or the new one, never half of it."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; on success it replaces `path` in one step
    (`os.replace`), on error it is deleted and `path` is left as it was. Creates the folder (and
    removes again the folders it created when the write fails: a failed run leaves no empty folder).

    The file gets the mode a plain `open()` gives (0666 minus the umask: 0644 usually), also when
    the writer made it private (safetensors writes 0600), so the WebUI's user can read it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with new_folders(path.parent):
        try:
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


@contextmanager
def new_folders(folder: str | os.PathLike) -> Iterator[Path]:
    """Create `folder` and its missing parents for the block; should the block fail, remove those of
    them that are still empty (deepest first), so that nothing is left that was not there before."""
    folder = Path(folder)
    created = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        created.append(probe)
        probe = probe.parent
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        for made in created:
            try:
                made.rmdir()
            except OSError:  # not empty (another writer, a kept partial download) or gone already
                break
        raise


def _umask() -> int:
    try:  # Linux: read it without changing it (other threads may be creating files meanwhile)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
