"""A reference photo in whatever form a host sends it, decoded by the one image decoder.

The WebUI's API sends base64 (optionally a data: URL), its panel PIL images or uploaded files, the
ComfyUI nodes arrays, the command line and Python users file paths (`pathlib.Path`: a plain string
is never read as a path, so no API client can make the server open a file).
"""
from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Any

from wplus.errors import ImageInputError

MAX_BASE64_CHARS = 64 * 1024 * 1024


def decode_photo(value: Any):
    """The photo as a `NormalizedImage` (`wplus.faces.image`) from a PIL image, an HxWxC array, file
    bytes, base64 text, a `pathlib.Path` or a `NormalizedImage`; None if there is none."""
    import numpy as np
    from PIL import Image

    from wplus.faces.image import NormalizedImage, normalize_image

    if value is None or isinstance(value, NormalizedImage):
        return value
    if isinstance(value, str):
        value = _from_base64(value)
    if isinstance(value, (Image.Image, bytes, bytearray, Path)):
        src = value
    elif hasattr(value, "__array__"):
        src = np.asarray(value)
    else:
        raise ImageInputError(f"W+ reference: expected an image or base64 string, got {type(value).__name__}")
    try:
        return normalize_image(src)
    except ImageInputError as e:
        raise ImageInputError(f"W+ reference: {e}") from e


def _from_base64(text: str) -> bytes:
    if len(text) > MAX_BASE64_CHARS:
        raise ImageInputError("W+ reference: the base64 image is larger than 64 MB")
    data = text.split(",", 1)[1] if text.startswith("data:") else text
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageInputError("W+ reference: not valid base64 image data (send the PNG/JPEG file bytes "
                              "base64-encoded, optionally as a data: URL)") from e


def reference_list(reference: Any) -> list:
    """The photos of one identity source: one photo, a list of them (API), or uploaded files
    (gradio's File gives objects with the temp file's path in `.name`); empty entries dropped."""
    items = list(reference) if isinstance(reference, (list, tuple)) else [reference]
    out = []
    for item in items:
        if isinstance(item, (list, tuple)):
            out += reference_list(item)
        elif item is None or (isinstance(item, str) and not item):
            continue
        elif _uploaded_file(item):
            out.append(Path(item.name).read_bytes())
        else:
            out.append(item)
    return out


def _uploaded_file(item: Any) -> bool:
    return (not isinstance(item, (str, bytes, bytearray, Path)) and isinstance(getattr(item, "name", None), str)
            and os.path.isfile(item.name))
