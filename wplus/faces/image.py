"""Turn whatever the user hands us into one upright 8-bit RGB image of bounded size.

Everything downstream (face detection, alignment, hashing for the identity cache) works on the
`NormalizedImage` made here, so odd inputs are dealt with once: files, bytes, PIL images and numpy
arrays; RGBA/LA/palette transparency composited on white; CMYK, greyscale, 1-bit, 16-bit/float and
rare PIL modes; EXIF orientation; truncated, corrupt or non-image files (-> `ImageInputError`, never
a crash later). This is the only image decoder of the package (the WebUI API hands its bytes here).

Order of work, so nothing is decoded twice and nothing huge is decoded at all: open (header only),
our own pixel limit on the header's size (`MAX_DECODE_PIXELS`, whatever the host set
`PIL.Image.MAX_IMAGE_PIXELS` to; JPEGs are first drafted to a reduced scale), one decode, then the
orientation (Pillow's TIFF loader applies it itself while decoding), then a reduction to at
most `MAX_WORKING_PIXELS`. Coordinates produced on the working image are mapped back to the original
(upright, full-resolution) pixel frame with `NormalizedImage.to_original`.
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, JpegImagePlugin, TiffImagePlugin, UnidentifiedImageError

from wplus.errors import ImageInputError

ImageLike = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, Image.Image, np.ndarray]

#: Pixels of the working image (4096 x 4096, about 50 MB as RGB). Photos up to this size (a 16-MP
#: phone photo, an 8000 x 512 strip) are worked on at full resolution, so landmarks come from the
#: original pixels; larger ones are reduced to it once, right after decoding.
MAX_WORKING_PIXELS = 4096 * 4096

#: Our own decompression-bomb limit, checked on the header's size before anything is decoded and
#: independent of `PIL.Image.MAX_IMAGE_PIXELS` (a host may set it to None). JPEGs are drafted
#: (decoded at 1/2..1/8 scale) first, so only their reduced size counts.
MAX_DECODE_PIXELS = 180_000_000

_WHITE = (255, 255, 255)
_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}


@dataclass(frozen=True)
class NormalizedImage:
    """An upright RGB working copy plus the size of the original it came from.

    `scale` is (sx, sy): working pixels per original pixel (<= 1; 1 unless the input was above
    `MAX_WORKING_PIXELS`).
    Points use pixel-index coordinates (pixel centres on integers) in both frames.
    """

    image: Image.Image
    original_size: tuple[int, int]
    _hash: list = field(default_factory=list, repr=False, compare=False)

    @property
    def scale(self) -> tuple[float, float]:
        return (self.image.width / self.original_size[0], self.image.height / self.original_size[1])

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """Working-image pixel coordinates (..., 2) -> original-image pixel coordinates."""
        sx, sy = self.scale
        pts = np.asarray(points, dtype=np.float64)
        return (pts + 0.5) / np.array([sx, sy]) - 0.5

    def from_original(self, points: np.ndarray) -> np.ndarray:
        """Original-image pixel coordinates (..., 2) -> working-image pixel coordinates."""
        sx, sy = self.scale
        pts = np.asarray(points, dtype=np.float64)
        return (pts + 0.5) * np.array([sx, sy]) - 0.5

    @property
    def sha256(self) -> str:
        """Content hash of the normalised pixels: the same photo gives the same key however it came."""
        if not self._hash:
            h = hashlib.sha256(f"RGB {self.image.width}x{self.image.height}\n".encode())
            h.update(self.image.tobytes())
            self._hash.append(h.hexdigest())
        return self._hash[0]


def normalize_image(src: ImageLike | NormalizedImage, max_pixels: int = MAX_WORKING_PIXELS) -> NormalizedImage:
    """Load/convert `src` into a `NormalizedImage` (RGB, upright, at most `max_pixels` pixels).

    Accepts a path, raw file bytes, a binary file object, a PIL image or a numpy array
    (HxW, HxWx{1,3,4} or CxHxW; uint8, uint16, bool or float in [0, 1]; RGB channel order).
    Raises `ImageInputError` with an actionable message for anything unreadable.
    """
    if isinstance(src, NormalizedImage):
        return src
    if isinstance(src, np.ndarray):
        return _finish(_array_to_pil(src), max_pixels, owned=False)
    if isinstance(src, Image.Image):
        return _from_pil(src, _describe(src), max_pixels, owned=False)
    im, name = _open(src)
    try:
        norm = _from_pil(im, name, max_pixels, owned=True)
    except BaseException:
        _close(im)
        raise
    if norm.image is not im:
        _close(im)
    elif getattr(im, "fp", None) is not None:  # a multi-frame file keeps its handle open: detach
        norm = NormalizedImage(image=im.copy(), original_size=norm.original_size)
        _close(im)
    return norm


def load_image(src: ImageLike, max_pixels: int = MAX_WORKING_PIXELS) -> Image.Image:
    """Convenience: the normalised RGB PIL image only (see `normalize_image`)."""
    return normalize_image(src, max_pixels).image


# --- opening -------------------------------------------------------------------------------------

def _describe(src: object) -> str:
    if isinstance(src, (str, os.PathLike)):
        text = os.fspath(src)
        text = text if len(text) <= 200 else f"{text[:80]}...{text[-80:]}"
        return f"'{text}'"
    if isinstance(src, Image.Image):
        return f"the {src.mode} {src.width}x{src.height} image"
    name = getattr(src, "name", None)
    return f"'{name}'" if isinstance(name, str) else "the uploaded data"


def _unreadable(name: str, e: BaseException) -> ImageInputError:
    return ImageInputError(
        f"{name} is not a readable image ({type(e).__name__}: {e}). Use a JPEG, PNG or WebP photo "
        "(re-export it, or convert HEIC/RAW files first).")


def _open(src: ImageLike) -> tuple[Image.Image, str]:
    name = _describe(src)
    return _pil_open(_source(src, name), name), name


def _source(src: ImageLike, name: str) -> object:
    """What `Image.open` reads: the checked path, the bytes as a stream, or the caller's stream."""
    if isinstance(src, (str, os.PathLike)):
        return _existing_file(src, name)
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise ImageInputError("The uploaded image data is empty (0 bytes).")
        return io.BytesIO(bytes(src))
    if hasattr(src, "read"):
        if getattr(src, "closed", False):
            label = name if isinstance(getattr(src, "name", None), str) else "given as the photo"
            raise ImageInputError(f"The file object {label} is closed: pass it while it is open (inside its "
                                  "`with` block), or pass the photo's path or bytes instead.")
        return src
    raise ImageInputError(
        f"Cannot use a {type(src).__name__} as an image: pass a file path, file bytes, "
        "a PIL image or a numpy array.")


def _existing_file(src: str | os.PathLike, name: str) -> Path:
    path = Path(src)
    try:
        exists = path.is_file()
    except (OSError, ValueError) as e:  # ENAMETOOLONG, a NUL byte in the path...
        raise ImageInputError(f"Cannot read the image path {name}: {e}. Check the path "
                              "(it may be too long or hold invalid characters).") from e
    if not exists:
        raise ImageInputError(f"No image file at {name}: check the path.")
    return path


def _pil_open(fp: object, name: str) -> Image.Image:
    """Open (header only); a JPEG above PIL's bomb limit is opened for drafting instead."""
    try:
        with warnings.catch_warnings():
            # Size is checked deliberately below (draft for JPEG, MAX_DECODE_PIXELS otherwise).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(fp)
    except Image.DecompressionBombError as e:
        jpeg = _open_huge_jpeg(fp)
        if jpeg is not None:
            return jpeg
        raise _too_large(name, str(e)) from e
    except UnidentifiedImageError as e:
        raise ImageInputError(
            f"{name} is not a readable image (unrecognised format). "
            "Use a JPEG, PNG or WebP photo (convert HEIC/RAW files first).") from e
    except MemoryError as e:
        raise _too_large(name, "not enough memory to open it") from e
    except Exception as e:  # PIL plugins raise many types on crafted headers
        raise _unreadable(name, e) from e


def _too_large(name: str, why: str) -> ImageInputError:
    return ImageInputError(
        f"{name} is too large to decode safely ({why}). Downscale it below "
        f"{MAX_DECODE_PIXELS // 1_000_000} megapixels and try again.")


def _close(im: Image.Image) -> None:
    try:
        im.close()
    except Exception:  # closing twice or a half-built plugin object: nothing left to free
        pass


def _open_huge_jpeg(fp: object) -> Image.Image | None:
    """A JPEG above PIL's bomb limit is still fine: it will be decoded at 1/8..1/2 scale (draft)."""
    try:
        if isinstance(fp, Path):
            with open(fp, "rb") as f:
                magic = f.read(3)
            source: object = str(fp)
        else:
            fp.seek(0)
            magic = fp.read(3)
            fp.seek(0)
            source = fp
        if magic != b"\xff\xd8\xff":
            return None
        return JpegImagePlugin.JpegImageFile(source)  # the plugin itself does no bomb check
    except Exception:
        return None


def _from_pil(im: Image.Image, name: str, max_pixels: int, owned: bool) -> NormalizedImage:
    """owned: we opened `im` ourselves, so it may be drafted (a caller's image is never mutated)."""
    try:
        width, height = (int(v) for v in im.size)
        if owned and getattr(im, "n_frames", 1) > 1:
            im.seek(0)  # animated GIF/WebP, multi-page TIFF: the first frame
        header_size = (width, height)
        drafted = False
        if owned and isinstance(im, JpegImagePlugin.JpegImageFile) and width * height > max_pixels:
            drafted = _draft(im, max_pixels)
    except ImageInputError:
        raise
    except Exception as e:
        raise _unreadable(name, e) from e
    if width <= 0 or height <= 0:
        raise ImageInputError(f"{name} is empty ({width}x{height}).")
    w, h = im.size
    if w * h > MAX_DECODE_PIXELS:  # before any decode, whatever PIL.Image.MAX_IMAGE_PIXELS says
        raise ImageInputError(
            f"{name} is {w}x{h} ({w * h / 1e6:.0f} megapixels); the "
            f"limit is {MAX_DECODE_PIXELS // 1_000_000} megapixels. Downscale it or save it as JPEG.")
    try:
        im.load()  # the one decode
    except MemoryError as e:
        raise _too_large(name, "not enough memory to decode it") from e
    except Exception as e:  # OSError, SyntaxError, TypeError, IndexError... from inside the plugins
        raise ImageInputError(
            f"{name} is truncated or corrupt: not a readable image ({type(e).__name__}: {e}). "
            "Re-download or re-export the photo.") from e
    # After decoding: Pillow's TIFF loader applies the orientation itself while decoding (9.5 keeps
    # the tag, 10 and later drop it), so a TIFF is upright already.
    orientation = 1 if isinstance(im, TiffImagePlugin.TiffImageFile) else _orientation(im)
    full_size = header_size if drafted else im.size
    decoded = _to_resizable_mode(im, name)
    if decoded is not im and owned:
        _close(im)  # free the decoded source early: peak memory matters for huge inputs
    return _finish(decoded, max_pixels, orientation, full_size, owned)


def _draft(im: Image.Image, max_pixels: int) -> bool:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale, never below `max_pixels`. True if reduced."""
    w, h = im.size
    k = (max_pixels / (w * h)) ** 0.5
    before = im.size
    im.draft(None, (max(1, int(np.ceil(w * k))), max(1, int(np.ceil(h * k)))))
    return im.size != before


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # malformed EXIF must not block an otherwise fine photo
        return 1
    return value if value in _TRANSPOSE else 1


# --- pixel formats -------------------------------------------------------------------------------

def _to_resizable_mode(im: Image.Image, name: str = "") -> Image.Image:
    """Bring any PIL mode to L, RGB or RGBA (the modes PIL resizes correctly), values in 0..255."""
    mode = im.mode
    if mode in ("L", "RGB", "RGBA"):
        return im
    try:
        if mode in ("I", "F") or mode.startswith("I;16"):
            return Image.fromarray(_high_depth_to_uint8(np.asarray(im), name or f"the {mode} image"), "L")
        if mode == "P":
            return im.convert("RGBA" if "transparency" in im.info else "RGB")
        if mode == "1":
            return im.convert("L")
        if mode in ("La", "RGBa"):  # premultiplied alpha: PIL un-premultiplies into LA / RGBA
            im = im.convert("LA" if mode == "La" else "RGBA")
        if im.mode in ("PA", "LA", "RGBA"):
            return im.convert("RGBA")
        return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX...
    except ImageInputError:
        raise
    except Exception as e:
        raise ImageInputError(
            f"Unsupported image mode {mode!r} ({e}): save the photo as an RGB JPEG or PNG.") from e


def _high_depth_to_uint8(a: np.ndarray, name: str) -> np.ndarray:
    """16-bit/32-bit integer or float pixels -> uint8 (16-bit data scaled, not clipped); `name` says
    which input it is in messages."""
    a = np.asarray(a)
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise ImageInputError(
                f"{name[:1].upper()}{name[1:]} has NaN or infinite pixel values, which cannot be shown as a photo. "
                "Replace them first (e.g. numpy.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=0.0)), or use "
                "the photo as an 8-bit JPEG or PNG.")
        peak = float(a.max()) if a.size else 0.0
        scaled = a * 255.0 if peak <= 1.0 else a
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if a.dtype == np.uint8:
        return a
    lo = int(a.min()) if a.size else 0
    hi = int(a.max()) if a.size else 0
    if lo < 0:
        raise ImageInputError(f"{name[:1].upper()}{name[1:]} has negative pixel values; expected 0..255 or "
                              "0..65535.")
    if a.dtype.itemsize == 2 or hi > 255:  # 16-bit data: full range maps to 0..255
        div = 257.0 if hi <= 65535 else hi / 255.0
        return np.clip(np.rint(a / div), 0, 255).astype(np.uint8)
    return a.astype(np.uint8)


def _array_to_pil(a: np.ndarray) -> Image.Image:
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[-1] > 4 and a.shape[0] in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # CxHxW (torch layout) -> HxWxC
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ImageInputError(
            f"A numpy image must be HxW, HxWx3 or HxWx4; got shape {tuple(a.shape)}.")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageInputError(f"The image is empty (shape {tuple(a.shape)}).")
    if a.dtype.kind not in "biuf":
        raise ImageInputError(f"Unsupported pixel type {a.dtype}: use uint8, uint16 or float in [0, 1].")
    a = np.ascontiguousarray(_high_depth_to_uint8(a, f"the numpy image ({a.dtype}, shape {tuple(a.shape)})"))
    mode = "L" if a.ndim == 2 else ("RGB" if a.shape[-1] == 3 else "RGBA")
    return Image.fromarray(a, mode)


def _finish(im: Image.Image, max_pixels: int, orientation: int = 1,
            full_size: tuple[int, int] | None = None, owned: bool = True) -> NormalizedImage:
    """Reduce to max_pixels, composite transparency on white, RGB, apply EXIF orientation.

    owned: `im` may be closed once reduced (never a caller's own image)."""
    if im.mode not in ("L", "RGB", "RGBA"):
        im = _to_resizable_mode(im)
    full_w, full_h = full_size or im.size
    if im.width * im.height > max_pixels:
        k = (max_pixels / (im.width * im.height)) ** 0.5
        size = (max(1, int(im.width * k)), max(1, int(im.height * k)))
        small = im.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)  # RGBA: premultiplied
        if owned:
            _close(im)
        im = small
    if im.mode == "RGBA":
        base = Image.new("RGB", im.size, _WHITE)
        base.paste(im, mask=im.getchannel("A"))
        im = base
    elif im.mode != "RGB":
        im = im.convert("RGB")
    for op in _TRANSPOSE.get(orientation, ()):
        im = im.transpose(op)
    if orientation in (5, 6, 7, 8):
        full_w, full_h = full_h, full_w
    return NormalizedImage(image=im, original_size=(int(full_w), int(full_h)))
