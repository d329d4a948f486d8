"""A corpus of odd image files, generated at test time (nothing big is committed).

Along the lines of the fuzzing that found issue 9's image bugs: every mode PIL can write in every
format that takes it, EXIF/TIFF orientations, big sides, interlaced and truncated files, headers of
tiny files claiming huge sizes, byte flips and cuts at several offsets. Each entry is
(name, file bytes, suffix); what a reader must do with each is the test's business: give a correct
image or refuse with a clear `ImageInputError`, nothing else.
"""
from __future__ import annotations

import io
import struct
import zlib
from typing import Iterator

import numpy as np
from PIL import Image

MODES_BY_FORMAT = {
    "PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I"),
    "GIF": ("L", "P", "RGB"),
    "TIFF": ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I", "F", "LAB", "YCbCr", "I;16"),
    "BMP": ("1", "L", "P", "RGB"),
    "JPEG": ("L", "RGB", "CMYK"),
    "WEBP": ("RGB", "RGBA"),
    "PPM": ("1", "L", "RGB"),
    "TGA": ("L", "LA", "P", "RGB", "RGBA"),
    "ICO": ("RGBA",),
    "SGI": ("L", "RGB"),
}
SUFFIX = {"PNG": ".png", "GIF": ".gif", "TIFF": ".tif", "BMP": ".bmp", "JPEG": ".jpg", "WEBP": ".webp",
          "PPM": ".ppm", "TGA": ".tga", "ICO": ".ico", "SGI": ".sgi"}


def scene(w: int = 48, h: int = 32, seed: int = 0) -> np.ndarray:
    """Small asymmetric RGB picture: a gradient, a red top-left block, noise."""
    rng = np.random.default_rng(seed)
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    a[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    a[..., 2] = rng.integers(0, 255, (h, w), dtype=np.uint8)
    a[: h // 3, : w // 3] = (255, 0, 0)
    return a


def as_mode(rgb: np.ndarray, mode: str) -> Image.Image:
    im = Image.fromarray(rgb, "RGB")
    if mode in ("I;16", "I", "F"):
        grey = np.asarray(im.convert("L")).astype(np.uint16) * 257
        im = Image.fromarray(grey.astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]))
        return im if im.mode == mode else im.convert(mode)
    if mode in ("LA", "RGBA"):
        base = im.convert(mode[:-1])
        base.putalpha(Image.fromarray(np.linspace(0, 255, rgb.shape[1], dtype=np.uint8)[None].repeat(rgb.shape[0], 0)))
        return base
    return im.convert(mode)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def valid_files(rgb: np.ndarray) -> Iterator[tuple[str, bytes, str]]:
    """Every (format, mode) PIL can write here, plus interlaced/progressive variants."""
    for fmt, modes in MODES_BY_FORMAT.items():
        for mode in modes:
            try:
                data = encode(as_mode(rgb, mode), fmt)
            except (OSError, ValueError, KeyError, TypeError):
                continue  # this PIL cannot write that combination
            yield f"{fmt}-{mode}", data, SUFFIX[fmt]
    yield "PNG-interlaced", png_interlaced(rgb), ".png"
    yield "JPEG-progressive", encode(Image.fromarray(rgb), "JPEG", progressive=True, quality=90), ".jpg"
    frames = [Image.fromarray(np.roll(rgb, k, axis=1)) for k in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    yield "GIF-animated", buf.getvalue(), ".gif"


def chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_interlaced(rgb: np.ndarray) -> bytes:
    """An Adam7-interlaced 8-bit RGB PNG (PIL cannot write one), built pass by pass."""
    h, w, _ = rgb.shape
    raw = b""
    adam7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    for x0, y0, dx, dy in adam7:
        sub = rgb[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def huge_claims() -> Iterator[tuple[str, bytes, str]]:
    """Tiny files whose headers claim huge or broken sizes."""
    yield "QOI-13000", b"qoif" + struct.pack(">II", 13000, 13000) + b"\x04\x00" + b"\x00" * 16, ".qoi"
    dds = b"DDS " + struct.pack("<7I", 124, 0x1007, 13000, 13000, 0, 0, 0) + b"\x00" * 100
    yield "DDS-zeros", dds, ".dds"
    yield "FTEX-zeros", b"FTEX" + b"\x00" * 60, ".ftex"
    png = bytearray(encode(Image.new("RGB", (1, 1)), "PNG"))
    png[8:33] = chunk(b"IHDR", struct.pack(">IIBBBBB", 34000, 34000, 8, 2, 0, 0, 0))
    yield "PNG-34000-header", bytes(png), ".png"
    gif = bytearray(encode(Image.new("P", (2, 2)), "GIF"))
    gif[6:10] = struct.pack("<HH", 65535, 65535)
    yield "GIF-65535-screen", bytes(gif), ".gif"
    bmp = bytearray(encode(Image.new("RGB", (2, 2)), "BMP"))
    bmp[18:26] = struct.pack("<ii", 60000, 60000)
    yield "BMP-60000", bytes(bmp), ".bmp"


def damaged(name: str, data: bytes, suffix: str) -> Iterator[tuple[str, bytes, str]]:
    """Cuts and byte flips of one valid file."""
    n = len(data)
    for frac in (0.05, 0.3, 0.6, 0.95):
        yield f"{name}-cut{int(frac * 100)}", data[: max(1, int(n * frac))], suffix
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    for k in range(3):
        b = bytearray(data)
        for pos in rng.integers(0, min(n, 64), 4):
            b[pos] ^= 0xFF
        yield f"{name}-flip{k}", bytes(b), suffix


def corpus(seed: int = 0) -> list[tuple[str, bytes, str]]:
    rgb = scene(seed=seed)
    files = list(valid_files(rgb))
    out = list(files) + list(huge_claims())
    for name, data, suffix in files:
        out += list(damaged(name, data, suffix))
    return out
