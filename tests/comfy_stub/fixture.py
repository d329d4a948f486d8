"""Puts the ComfyUI stand-in (`comfy`, `folder_paths`) on sys.path for one test, then removes it."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

STUB_DIR = Path(__file__).resolve().parent


@contextmanager
def installed(base: Path):
    sys.path.insert(0, str(STUB_DIR))
    try:
        import folder_paths

        folder_paths.reset(str(base))
        yield folder_paths
    finally:
        sys.path.remove(str(STUB_DIR))
        for name in [n for n in sys.modules if n == "folder_paths" or n == "comfy" or n.startswith("comfy.")]:
            del sys.modules[name]
