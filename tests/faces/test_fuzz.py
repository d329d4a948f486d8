"""Bad and odd images (issue 9, section 4): a generated corpus through the image reader, and one
regression test per class the fuzzing found. Every input gives a correct image or a clear
ImageInputError — never a raw exception from inside Pillow."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from helpers.image_corpus import as_mode, chunk, corpus, encode, huge_claims, png_interlaced, scene
from wplus.errors import ImageInputError, WPlusError
from wplus.faces import dlib_backend
from wplus.faces.detect import detect_faces
from wplus.faces.image import MAX_DECODE_PIXELS, normalize_image


def _read(src):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL warns about the corrupt EXIF and metadata on purpose
        return normalize_image(src)


def test_corpus_gives_an_image_or_a_clear_error(tmp_path):
    files = corpus()
    assert len(files) > 300
    outcomes = {"image": 0, "refused": 0}
    for name, data, suffix in files:
        path = tmp_path / f"{name}{suffix}"
        path.write_bytes(data)
        for form, src in (("path", path), ("bytes", data), ("file", io.BytesIO(data))):
            try:
                norm = _read(src)
            except ImageInputError as e:
                assert str(e) and "Traceback" not in str(e)
                outcomes["refused"] += 1
                continue
            except Exception as e:  # noqa: BLE001 - the point of the test
                pytest.fail(f"{name} by {form}: raw {type(e).__name__}: {e}")
            assert norm.image.mode == "RGB" and norm.image.width > 0 and norm.image.height > 0, name
            outcomes["image"] += 1
            if "-cut" not in name and "-flip" not in name and name.split("-")[0] in ("PNG", "TIFF", "BMP", "GIF"):
                assert norm.image.size == (48, 32), (name, form, norm.image.size)
    assert outcomes["image"] > 100 and outcomes["refused"] > 100, outcomes


@pytest.mark.parametrize("fmt,mode", [("GIF", "P"), ("PNG", "P"), ("PNG", "1"), ("PNG", "I;16"), ("PNG", "LA"),
                                      ("TIFF", "CMYK"), ("TIFF", "F"), ("TIFF", "I"), ("TIFF", "LAB")])
def test_valid_files_by_path_are_not_closed_before_use(tmp_path, fmt, mode):
    # Pillow 10.4: "Operation on closed image" when the source was closed inside `with im:`
    rgb = scene()
    path = tmp_path / f"x.{fmt.lower()}"
    path.write_bytes(encode(as_mode(rgb, mode), fmt))
    out = np.asarray(_read(path).image).astype(int)
    assert out.shape == (32, 48, 3)
    if mode in ("P", "CMYK", "LAB"):  # colour kept: the red block is red
        assert out[2, 2, 0] > 180 and out[2, 2, 1] < 90


def test_png_with_a_side_over_4096_by_path(tmp_path):
    path = tmp_path / "wide.png"
    Image.fromarray(np.tile(scene(), (1, 120, 1))).save(path)  # 5760 x 32
    assert _read(path).image.size == (5760, 32)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["TIFF", "PNG", "WEBP", "JPEG"])
def test_orientation_is_applied_once(fmt, orientation):
    smooth = scene(64, 40)
    smooth[..., 2] = 128  # no noise: JPEG keeps the picture within a few grey levels
    upright = Image.fromarray(smooth)
    undo = {2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180],
            4: [Image.Transpose.FLIP_TOP_BOTTOM], 5: [Image.Transpose.TRANSPOSE],
            6: [Image.Transpose.ROTATE_90], 7: [Image.Transpose.TRANSVERSE],
            8: [Image.Transpose.ROTATE_270]}.get(orientation, [])
    stored = upright
    for op in undo:  # what a camera writes: the pixels as the sensor saw them + the tag
        stored = stored.transpose(op)
    exif = Image.Exif()
    exif[0x0112] = orientation
    kw = {"quality": 95} if fmt == "JPEG" else ({"lossless": True} if fmt == "WEBP" else {})
    if fmt == "TIFF":
        data = _tiff_with_orientation(stored, orientation)
    else:
        data = encode(stored, fmt, exif=exif.tobytes(), **kw)
    out = np.asarray(_read(data).image).astype(int)
    assert out.shape == (40, 64, 3), (fmt, orientation, out.shape)
    err = np.abs(out - np.asarray(upright).astype(int)).mean()
    assert err < (6 if fmt == "JPEG" else 0.5), (fmt, orientation, err)


def _tiff_with_orientation(im: Image.Image, orientation: int) -> bytes:
    from PIL import TiffImagePlugin

    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[274] = orientation
    buf = io.BytesIO()
    im.save(buf, "TIFF", tiffinfo=info)
    return buf.getvalue()


def test_tiff_orientation_2_gives_unmirrored_landmarks():
    import skimage.data

    upright = Image.fromarray(skimage.data.astronaut())
    data = _tiff_with_orientation(upright.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 2)
    face, = detect_faces(data)
    truth, = detect_faces(upright)
    np.testing.assert_allclose(face.key_points(), truth.key_points(), atol=1.0)


def test_truncated_interlaced_png_is_a_clear_error():
    data = png_interlaced(scene(64, 64))
    assert _read(data).image.size == (64, 64)
    for cut in (0.3, 0.6, 0.9):
        with pytest.raises(ImageInputError, match="truncated or corrupt"):
            _read(data[: int(len(data) * cut)])


def test_pixel_limit_holds_when_the_host_lifts_pils(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # what some hosts do
    header = dict((n, d) for n, d, _ in huge_claims())["PNG-34000-header"]  # 1156 MP claimed
    with pytest.raises(ImageInputError, match="megapixels"):
        _read(header)
    # a real PNG that decodes to more than the limit: refused from its header, never decoded
    w = MAX_DECODE_PIXELS // 1000 + 1
    rows = zlib_rows(w, 1000)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", __import__("struct").pack(">IIBBBBB", w, 1000, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    assert len(png) < 1_000_000
    with pytest.raises(ImageInputError, match="limit is 180 megapixels"):
        _read(png)


def zlib_rows(w: int, h: int) -> bytes:
    import zlib
    comp = zlib.compressobj(9)
    row = b"\x00" * (w + 1)
    return b"".join(comp.compress(row) for _ in range(h)) + comp.flush()


@pytest.mark.parametrize("name", ["QOI-13000", "DDS-zeros", "FTEX-zeros", "GIF-65535-screen", "BMP-60000"])
def test_tiny_files_claiming_huge_sizes(name):
    data = dict((n, d) for n, d, _ in huge_claims())[name]
    with pytest.raises(ImageInputError, match="not a readable image|megapixels|too large"):
        _read(data)


@pytest.mark.parametrize("mode", ["La", "RGBa", "PA", "LA", "RGBX", "HSV", "LAB", "YCbCr", "CMYK", "I;16B",
                                  "I;16L", "I;16N", "I", "F", "1", "P"])
def test_rare_modes(mode):
    try:
        im = Image.new(mode, (6, 4))
    except (ValueError, KeyError):
        pytest.skip(f"this Pillow has no mode {mode}")
    out = _read(im)
    assert out.image.mode == "RGB" and out.image.size == (6, 4)
    if mode in ("La", "LA", "PA", "RGBa"):  # fully transparent: composited on white
        assert (np.asarray(out.image) == 255).all()


def test_long_paths_give_a_clear_error(tmp_path):
    with pytest.raises(ImageInputError, match="path"):
        _read(str(tmp_path / ("x" * 5000)) + ".png")
    with pytest.raises(ImageInputError, match="path"):
        _read("bad\0name.png")
    assert issubclass(ImageInputError, WPlusError)


# --- faces in large photos -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def astronaut():
    import skimage.data
    a = skimage.data.astronaut()
    face, = detect_faces(a)
    return a, face


def _canvas(w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    grey = (96 + 40 * np.sin(xx / 300.0) * np.cos(yy / 200.0)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


@pytest.mark.parametrize("size,at", [((6000, 4000), (4100, 2900)), ((8000, 512), (6900, 0))])
def test_91px_face_in_a_large_photo_is_found(astronaut, size, at):
    a, truth = astronaut
    assert 85 <= truth.width <= 95  # the astronaut's face box: ~91 px
    canvas = _canvas(*size)
    canvas[at[1]:at[1] + 512, at[0]:at[0] + 512] = a
    faces = detect_faces(canvas)
    assert len(faces) == 1, f"{size}: {len(faces)} faces"
    eye = np.hypot(*np.subtract(*truth.eye_centers()))
    np.testing.assert_allclose(faces[0].key_points(), truth.key_points() + at, atol=0.08 * eye)


def test_detection_views_cover_a_big_photo_at_the_scale_for_small_faces():
    from wplus.faces import facexlib_backend as fx
    from wplus.faces import views

    norm = normalize_image(Image.new("RGB", (6000, 4000)))  # reduced to the working budget
    copies = views.detection_views(norm, fx.RETINA_MIN_FACE_PX, fx.DETECT_VIEW_PIXELS, fx.DETECT_TOTAL_PIXELS)
    glob, tiles = copies[0], copies[1:]
    assert glob.pixels.shape[0] * glob.pixels.shape[1] <= fx.DETECT_VIEW_PIXELS * 1.01 and tiles
    face_px = views.MIN_FACE_PX * min(norm.scale)  # an 80-px face of the original, working pixels
    for t in tiles:
        assert t.pixels.shape[0] * t.pixels.shape[1] <= fx.DETECT_VIEW_PIXELS * 1.01
        assert face_px * t.scale >= fx.RETINA_MIN_FACE_PX * 0.99  # detectable in every tile
    # every working pixel is in a tile, and tiles overlap by more than a small face
    covered = np.zeros(norm.image.size[::-1], bool)
    for t in tiles:
        x0, y0 = (int(v) for v in t.origin)
        h, w = round(t.pixels.shape[0] / t.scale), round(t.pixels.shape[1] / t.scale)
        covered[y0:y0 + h, x0:x0 + w] = True
    assert covered.all()
    # the way back: a tile's points and boxes land where they came from
    t = tiles[-1]
    pts = np.array([[10.0, 20.0], [300.0, 400.0]])
    back = t.points_to_working(pts)
    np.testing.assert_allclose((back - t.origin + 0.5) * t.scale - 0.5, pts, atol=1e-9)
    np.testing.assert_allclose(t.box_to_working([0, 0, 100, 50]),
                               [t.origin[0], t.origin[1], t.origin[0] + 100 / t.scale, t.origin[1] + 50 / t.scale])
    # dlib: one copy, never larger than its budget
    one = views.detection_views(norm, dlib_backend.HOG_MIN_FACE_PX, dlib_backend.DETECT_MAX_PIXELS,
                                dlib_backend.DETECT_MAX_PIXELS)
    assert len(one) == 1 and abs(one[0].scale * min(norm.scale) - 1.0) < 0.01  # the original's scale
