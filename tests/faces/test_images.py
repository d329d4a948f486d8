"""Image input normalisation: every format a user may upload becomes upright 8-bit RGB, or a clear
ImageInputError; huge images are reduced while decoding."""
from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from wplus.errors import ImageInputError, WPlusError
from wplus.faces.image import MAX_WORKING_PIXELS, load_image, normalize_image


def _png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _png16_rgb(a: np.ndarray) -> bytes:
    """A real 16-bit-per-channel RGB PNG (PIL cannot write one)."""
    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))


def _scene() -> np.ndarray:
    """Asymmetric test picture: red top-left block, green bottom-right block on grey."""
    a = np.full((60, 90, 3), 128, np.uint8)
    a[:20, :30] = (255, 0, 0)
    a[40:, 60:] = (0, 255, 0)
    return a


def test_rgb_passthrough_and_hash_is_stable_across_sources(tmp_path):
    a = _scene()
    path = tmp_path / "x.png"
    Image.fromarray(a).save(path)
    results = [normalize_image(src) for src in (a, Image.fromarray(a), path, str(path), path.read_bytes(),
                                                io.BytesIO(path.read_bytes()))]
    for r in results:
        assert r.image.mode == "RGB" and r.original_size == (90, 60) and r.scale == (1.0, 1.0)
        np.testing.assert_array_equal(np.asarray(r.image), a)
    assert len({r.sha256 for r in results}) == 1
    other = a.copy()
    other[0, 0] = 0
    assert normalize_image(other).sha256 != results[0].sha256
    assert normalize_image(results[0]) is results[0]
    assert isinstance(load_image(path), Image.Image)


def test_rgba_la_and_palette_transparency_composite_on_white():
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:30, 10:30] = (200, 10, 10, 255)
    rgba[0:5, 0:5] = (0, 0, 0, 128)  # half-transparent black over white -> mid grey
    out = np.asarray(normalize_image(_png_bytes(Image.fromarray(rgba, "RGBA"))).image).astype(int)
    assert (out[35:, 35:] == 255).all(), "fully transparent pixels must become white, not black"
    assert (out[15, 15] == (200, 10, 10)).all()
    assert np.all(np.abs(out[2, 2] - 127) <= 2)
    # numpy RGBA too
    assert (np.asarray(normalize_image(rgba).image)[35, 35] == 255).all()

    la = Image.fromarray(rgba[..., [0, 3]], "LA")
    assert (np.asarray(normalize_image(la).image)[35, 35] == 255).all()

    pal = Image.fromarray(rgba[..., :3]).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.info["transparency"] = pal.getpixel((39, 39))
    gif = io.BytesIO()
    pal.save(gif, "GIF", transparency=pal.getpixel((39, 39)))
    out = np.asarray(normalize_image(gif.getvalue()).image)
    assert (out[35, 35] == 255).all() and out[15, 15, 0] > 150


def test_cmyk_greyscale_and_one_bit(tmp_path):
    a = _scene()
    cmyk_path = tmp_path / "cmyk.jpg"
    Image.fromarray(a).convert("CMYK").save(cmyk_path, quality=95)
    assert Image.open(cmyk_path).mode == "CMYK"
    out = np.asarray(normalize_image(cmyk_path).image).astype(int)
    assert out.shape == (60, 90, 3)
    assert np.abs(out[5, 5] - (255, 0, 0)).max() < 40 and np.abs(out[55, 85] - (0, 255, 0)).max() < 40

    grey = np.tile(np.arange(90, dtype=np.uint8)[None, :] * 2, (60, 1))
    for src in (grey, Image.fromarray(grey, "L"), grey[..., None]):
        out = np.asarray(normalize_image(src).image)
        assert out.shape == (60, 90, 3)
        assert (out[..., 0] == grey).all() and (out[..., 1] == grey).all() and (out[..., 2] == grey).all()

    bw = Image.fromarray(grey > 90).convert("1")
    out = np.asarray(normalize_image(bw).image)
    assert set(np.unique(out)) == {0, 255}


def test_16bit_png_is_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (16, 1))
    im16 = Image.fromarray(ramp)
    assert im16.mode == "I;16"
    data = _png_bytes(im16)
    out = np.asarray(normalize_image(data).image)[..., 0].astype(int)
    expect = np.rint(ramp / 257.0).astype(int)
    assert np.abs(out - expect).max() <= 1
    assert out[0, -1] == 255 and out[0, 0] == 0 and 120 < out[0, 32] < 135  # a clip would give 255

    rgb16 = np.zeros((8, 8, 3), np.uint16)
    rgb16[..., 0] = 65535
    rgb16[..., 1] = 32896  # -> 128
    out = np.asarray(normalize_image(_png16_rgb(rgb16)).image).astype(int)
    assert (np.abs(out[..., 0] - 255) <= 1).all() and (np.abs(out[..., 1] - 128) <= 1).all()
    assert (out[..., 2] == 0).all()

    # 16-bit and float numpy arrays
    np.testing.assert_allclose(np.asarray(normalize_image(rgb16).image).astype(int), out, atol=1)
    f = np.zeros((4, 4, 3), np.float32)
    f[..., 2] = 1.0
    assert (np.asarray(normalize_image(f).image)[..., 2] == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    a = _scene()  # 90 wide, 60 high; red block top-left
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # stored rotated: display = rotate 90 degrees clockwise
    path = tmp_path / "rot.jpg"
    im.save(path, quality=95, exif=exif.tobytes())
    norm = normalize_image(path)
    assert norm.image.size == (60, 90) and norm.original_size == (60, 90)
    out = np.asarray(norm.image).astype(int)
    # 90 degrees clockwise: the top-left red block moves to the top-right corner
    assert out[5, 55, 0] > 200 and out[5, 55, 1] < 60
    assert out[5, 5, 0] < 200


def test_truncated_jpeg_and_png_give_clear_errors(tmp_path):
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noisy.save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    path = tmp_path / "cut.jpg"
    path.write_bytes(jpeg[: len(jpeg) // 2])
    with pytest.raises(ImageInputError, match="truncated or corrupt"):
        normalize_image(path)
    png = _png_bytes(noisy)
    with pytest.raises(ImageInputError):
        normalize_image(png[: len(png) // 2])


def test_non_image_inputs_give_clear_errors(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("this is not a photo\n" * 20)
    with pytest.raises(ImageInputError, match="not a readable image"):
        normalize_image(text)
    with pytest.raises(ImageInputError, match="No image file"):
        normalize_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageInputError, match="No image file"):
        normalize_image(tmp_path)  # a folder
    with pytest.raises(ImageInputError, match="empty"):
        normalize_image(b"")
    with pytest.raises(ImageInputError, match="Cannot use a int"):
        normalize_image(42)
    with pytest.raises(ImageInputError, match="HxW"):
        normalize_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageInputError, match="empty"):
        normalize_image(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ImageInputError, match="NaN"):
        normalize_image(np.full((4, 4, 3), np.nan, np.float32))
    with pytest.raises(ImageInputError, match="pixel type"):
        normalize_image(np.array([["a"]]))
    assert issubclass(ImageInputError, WPlusError)


def test_channel_first_arrays_are_accepted():
    a = _scene()
    out = normalize_image(np.moveaxis(a, -1, 0))
    np.testing.assert_array_equal(np.asarray(out.image), a)


def test_decompression_bomb_header_is_refused_clearly():
    png = bytearray(_png_bytes(Image.new("RGB", (1, 1))))
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    png[8:33] = _chunk(b"IHDR", ihdr)  # claims 900 megapixels
    with pytest.raises(ImageInputError, match="too large"):
        normalize_image(bytes(png))


def test_oversized_jpeg_header_goes_through_draft_not_the_bomb_check():
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(buf, "JPEG")
    jpeg = bytearray(buf.getvalue())
    sof = jpeg.find(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", 32768, 32768)  # claims 1 gigapixel, data missing
    try:
        norm = normalize_image(bytes(jpeg))
    except ImageInputError as e:  # libjpeg may or may not pad the missing data
        assert "truncated or corrupt" in str(e)
    else:  # decoded at 1/8 scale: 4096x4096, never the full gigapixel
        assert norm.original_size == (32768, 32768) and norm.image.size == (4096, 4096)
        assert norm.image.width * norm.image.height <= MAX_WORKING_PIXELS


def test_large_in_memory_image_is_reduced_and_maps_back():
    im = Image.new("RGB", (9000, 3000), (90, 90, 90))
    norm = normalize_image(im)
    w, h = norm.image.size
    assert MAX_WORKING_PIXELS * 0.999 < w * h <= MAX_WORKING_PIXELS and norm.original_size == (9000, 3000)
    assert abs(w / h - 3.0) < 1e-3  # the aspect ratio is kept
    strip = normalize_image(Image.new("RGB", (8000, 512)))  # 4 MP: within the budget, full resolution
    assert strip.image.size == (8000, 512) and strip.scale == (1.0, 1.0)
    assert im.size == (9000, 3000)  # the caller's image is untouched
    pts = np.array([[0.0, 0.0], [8999.0, 2999.0], [4500.0, 1500.0]])
    np.testing.assert_allclose(norm.to_original(norm.from_original(pts)), pts, atol=1e-9)
    sx, sy = norm.scale
    assert abs(sx - w / 9000) < 1e-9 and abs(sy - h / 3000) < 1e-9


_MEASURE = textwrap.dedent("""
    import json, resource, sys, time
    sys.path.insert(0, sys.argv[2])
    from wplus.faces.image import normalize_image
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    n = normalize_image(sys.argv[1])
    print(json.dumps({"size": n.image.size, "orig": n.original_size, "s": time.perf_counter() - t,
                      "peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))
""")


def test_12000px_jpeg_is_decoded_reduced_with_bounded_memory(tmp_path):
    path = tmp_path / "huge.jpg"
    big = Image.new("L", (12000, 12000), 80)
    big.paste(200, (3000, 3000, 9000, 9000))
    big.save(path, quality=80)
    del big
    res = json.loads(subprocess.run([sys.executable, "-c", _MEASURE, str(path), str(ROOT)], check=True,
                                    capture_output=True, text=True).stdout)
    assert tuple(res["orig"]) == (12000, 12000) and tuple(res["size"]) == (4096, 4096)
    # A full decode alone is 144 MB (432 MB as RGB); draft decodes 6000x6000 (36 MB).
    assert res["peak_mb"] < 130, res  # measured ~80 MB; without draft ~200 MB
