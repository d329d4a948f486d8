"""Installs the Forge stand-in for one test: Forge's `modules` and `backend` from this folder, the
modules Forge kept from AUTOMATIC1111 from the WebUI stand-in behind it. The WebUI stand-in's
`WebUI` driver then loads and runs the real extension against Forge's layouts."""
from __future__ import annotations

from pathlib import Path

from webui_stub import fixture

STUB_DIR = Path(__file__).resolve().parent


def installed(webui_root: Path):
    return fixture.installed(webui_root, host_dir=STUB_DIR)
