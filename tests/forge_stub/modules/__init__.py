"""Forge stand-in for the `modules` package: Forge's own modules here, every module Forge kept from
AUTOMATIC1111 from the WebUI stand-in behind it (see ../README.md)."""
from pathlib import Path

__path__.append(str(Path(__file__).resolve().parents[2] / "webui_stub" / "modules"))  # noqa: F821
