"""Read torch pickles safely, also inside the WebUI.

The WebUI replaces `torch.load` with its own checker (modules/safe.py), which refuses archives
written by current torch (their `.format_version` entry) and returns None. `weights_only=True`
already gives the same protection, so we call torch's own loader directly.
"""
from __future__ import annotations

import os
from typing import Any

import torch.serialization


def load_pickle(path: str | os.PathLike, **kwargs: Any) -> Any:
    """`torch.load(path, map_location="cpu", weights_only=True)`, bypassing host patches."""
    kwargs.setdefault("map_location", "cpu")
    kwargs["weights_only"] = True
    return torch.serialization.load(path, **kwargs)
