"""Face detection, choice and reference preparation on real photos (dlib), bad input end to end,
and the facexlib adapter against a fake facexlib module."""
from __future__ import annotations

import io
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import OFFICIAL
from wplus.errors import FaceNotFoundError, ImageInputError, MissingWeightsError, MultipleFacesError, WPlusError
from wplus.faces import detect as faces_mod
from wplus.faces import facexlib_backend as face_facexlib
from wplus.faces.align import alignment_matrix, map_points
from wplus.faces.detect import Face, PreparedFace, detect_faces, pick_face, prepare_reference
from wplus.faces.image import normalize_image

TEST_DATA = OFFICIAL / "test_data"
ONE_FACE = ["e4e/1.png", "e4e/2.png", "e4e/3.png", "e4e/4.png", "e4e/5.png", "aligned_face/1.png",
            "in_the_wild/1.jpg", "in_the_wild/2.png"]


def _astronaut() -> np.ndarray:
    import skimage.data
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def photos(shared_dir):
    return {name: TEST_DATA / name for name in ONE_FACE}


@pytest.fixture(scope="module")
def prepared(photos):
    out = {name: prepare_reference(path, backend="dlib", size=256) for name, path in photos.items()}
    out["astronaut"] = prepare_reference(_astronaut(), size=256)
    return out


@pytest.fixture(scope="module")
def detected(prepared):
    """All faces found per photo (prepare_reference runs detect on the whole image)."""
    return {name: ref.faces for name, ref in prepared.items()}


@pytest.fixture(scope="module")
def astro_face(detected) -> Face:
    return detected["astronaut"][0]


# --- real photos -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ONE_FACE + ["astronaut"])
def test_one_face_found_with_68_landmarks_inside_its_box(detected, name):
    faces = detected[name]
    assert len(faces) == 1, f"{name}: {len(faces)} faces"
    f = faces[0]
    assert f.landmarks.shape == (68, 2) and f.backend == "dlib" and f.score > 0
    x0, y0, x1, y1 = f.box
    assert x1 - x0 > 40 and y1 - y0 > 40
    eye_l, eye_r = f.eye_centers()
    m_l, m_r = f.mouth_corners()
    assert eye_l[0] < eye_r[0] and m_l[0] < m_r[0]  # image-left first
    assert max(eye_l[1], eye_r[1]) < min(m_l[1], m_r[1])  # eyes above the mouth
    for p in (eye_l, eye_r, m_l, m_r, f.nose_tip()):
        assert x0 - 5 <= p[0] <= x1 + 5 and y0 - 5 <= p[1] <= y1 + 5


def test_astronaut_landmarks_in_pixel_coordinates(astro_face):
    # skimage's astronaut: Eileen Collins' face is around x 180-270, y 80-180 of the 512x512 image.
    eye_l, eye_r = astro_face.eye_centers()
    assert 190 < eye_l[0] < 225 and 225 < eye_r[0] < 260 and 100 < eye_l[1] < 140
    assert np.allclose(astro_face.five_points()[[0, 1, 3, 4]], astro_face.key_points())
    d = astro_face.to_dict()
    assert len(d["landmarks"]) == 68 and d["backend"] == "dlib"


def test_pose_skeleton_has_no_face(shared_dir):
    pose = TEST_DATA / "pose" / "1.png"
    assert detect_faces(pose) == []


@pytest.mark.parametrize("name", ONE_FACE + ["astronaut"])
def test_prepared_reference_mask_covers_face_not_corners(prepared, name):
    ref = prepared[name]
    assert isinstance(ref, PreparedFace) and ref.face_index == 0 and ref.mask_source == "landmarks"
    assert ref.aligned.size == ref.masked.size == (256, 256)
    assert ref.mask.shape == (256, 256) and ref.mask.dtype == np.float32
    assert 0.0 <= ref.mask.min() and ref.mask.max() <= 1.0
    key = map_points(ref.matrix, np.concatenate([ref.face.key_points(), [ref.face.nose_tip()]]))
    for x, y in np.rint(key).astype(int):
        assert ref.mask[y, x] > 0.95, f"{name}: face point ({x},{y}) not covered"
    # the whole inner face (eyes to mouth, jaw to jaw) is covered
    inner = map_points(ref.matrix, ref.face.landmarks[list(range(17, 68))])
    vals = ref.mask[np.rint(inner[:, 1]).astype(int).clip(0, 255), np.rint(inner[:, 0]).astype(int).clip(0, 255)]
    assert vals.min() > 0.9
    for corner in (ref.mask[:24, :24], ref.mask[:24, -24:], ref.mask[-24:, :24], ref.mask[-24:, -24:]):
        assert corner.max() < 0.05
    masked = np.asarray(ref.masked).astype(int)
    assert (masked[:24, :24] >= 254).all() and (masked[:24, -24:] >= 254).all()
    a = np.asarray(ref.aligned).astype(int)
    full = ref.mask > 0.999
    assert np.abs(masked[full] - a[full]).max() <= 1
    assert 0.15 < ref.mask.mean() < 0.6


def test_prepared_hash_is_the_normalised_image_hash(prepared, photos):
    assert prepared["e4e/1.png"].image_hash == normalize_image(photos["e4e/1.png"]).sha256
    assert prepared["e4e/1.png"].image_hash != prepared["e4e/2.png"].image_hash


# --- several faces -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pair(photos):
    """Two real faces side by side: e4e/1 left (smaller), e4e/3 right."""
    left = Image.open(photos["e4e/1.png"]).convert("RGB").resize((360, 360), Image.Resampling.LANCZOS)
    right = Image.open(photos["e4e/3.png"]).convert("RGB")
    canvas = Image.new("RGB", (360 + 512, 512), (128, 128, 128))
    canvas.paste(left, (0, 76))
    canvas.paste(right, (360, 0))
    return canvas, detect_faces(canvas)


def test_two_faces_ordered_left_to_right(pair):
    canvas, faces = pair
    assert len(faces) == 2
    assert faces[0].center[0] < 360 < faces[1].center[0]
    assert faces[0].area < faces[1].area
    assert pick_face(faces) is faces[1]  # largest by default
    assert pick_face(faces, 0) is faces[0] and pick_face(faces, -1) is faces[1]
    with pytest.raises(FaceNotFoundError, match="2 faces found"):
        pick_face(faces, 2)
    with pytest.raises(MultipleFacesError, match="2 faces"):
        pick_face(faces, require_single=True)
    assert pick_face(faces, 1, require_single=True) is faces[1]
    # mirrored composition: the order follows the image, not the detector
    flipped = detect_faces(canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    assert len(flipped) == 2 and flipped[0].area > flipped[1].area


def test_prepare_reference_picks_the_requested_face(pair, photos):
    canvas, faces = pair
    with pytest.raises(MultipleFacesError):
        prepare_reference(canvas, require_single=True)
    with pytest.raises(FaceNotFoundError, match="out of range"):
        prepare_reference(canvas, face_index=5)
    left = prepare_reference(canvas, face_index=0)
    assert left.face_index == 0 and len(left.faces) == 2
    alone = prepare_reference(photos["e4e/1.png"])
    diff = np.abs(np.asarray(left.aligned, float) - np.asarray(alone.aligned, float))
    assert diff[64:192, 64:192].mean() < 15  # the same person, aligned the same way


# --- no face, bad input ----------------------------------------------------------------------------

def test_no_face_gives_clear_error():
    import skimage.data
    ramp = np.tile(np.linspace(0, 255, 400, dtype=np.float32)[None, :, None], (300, 1, 3)).astype(np.uint8)
    for img in (ramp, skimage.data.coffee()):
        assert detect_faces(img) == []
        with pytest.raises(FaceNotFoundError, match="No face found"):
            prepare_reference(img)
    with pytest.raises(FaceNotFoundError, match="No face"):
        pick_face([], 0)


def test_bad_files_fail_before_any_model(tmp_path):
    txt = tmp_path / "face.jpg"
    txt.write_text("definitely not a jpeg")
    with pytest.raises(ImageInputError, match="not a readable image"):
        detect_faces(txt)
    buf = io.BytesIO()
    Image.fromarray(_astronaut()).save(buf, "JPEG", quality=90)
    with pytest.raises(ImageInputError, match="truncated"):
        prepare_reference(buf.getvalue()[: len(buf.getvalue()) // 3])
    with pytest.raises(ImageInputError):
        detect_faces(np.zeros((5, 5, 7), np.uint8))
    with pytest.raises(WPlusError, match="Unknown face backend"):
        detect_faces(_astronaut(), backend="mtcnn")


def _close(a: Face, b: Face, tol: float) -> None:
    np.testing.assert_allclose(a.key_points(), b.key_points(), atol=tol)


def test_greyscale_cmyk_16bit_rgba_and_exif_inputs_find_the_same_face(astro_face, tmp_path):
    rgb = Image.fromarray(_astronaut())
    grey = rgb.convert("L")
    cmyk = io.BytesIO()
    rgb.convert("CMYK").save(cmyk, "JPEG", quality=95)
    g16 = Image.fromarray((np.asarray(grey).astype(np.uint16) * 257))
    assert g16.mode == "I;16"
    png16 = io.BytesIO()
    g16.save(png16, "PNG")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.new("L", rgb.size, 255).point(lambda v: v))
    stored = rgb.transpose(Image.Transpose.ROTATE_90)  # sideways on disk ...
    exif = stored.getexif()
    exif[0x0112] = 6  # ... displayed upright
    rotated = tmp_path / "rot.jpg"
    stored.save(rotated, quality=95, exif=exif.tobytes())
    for src in (grey, cmyk.getvalue(), png16.getvalue(), rgba, rotated):
        found = detect_faces(src)
        assert len(found) == 1
        _close(found[0], astro_face, tol=4.0)


def test_12000px_photo_detects_after_downscale_and_maps_back(astro_face, tmp_path):
    path = tmp_path / "huge.jpg"
    Image.fromarray(_astronaut()).convert("L").resize((12000, 12000), Image.Resampling.NEAREST).save(
        path, quality=85)
    ref = prepare_reference(path, size=256)  # one decode (reduced by draft), one detection
    faces = ref.faces
    assert len(faces) == 1
    k = 12000 / 512
    expected = astro_face.scaled(k, k)
    # mapped back to the 12000 px frame: within 3% of the eye distance of the small image's result
    eye_dist = np.hypot(*np.subtract(*expected.eye_centers()))
    np.testing.assert_allclose(faces[0].key_points(), expected.key_points(), atol=0.03 * eye_dist)
    assert ref.aligned.size == (256, 256) and ref.face.box[2] > 4000


# --- Face object ---------------------------------------------------------------------------------

def test_face_helpers_and_validation():
    lm5 = np.array([[10.0, 10.0], [30.0, 10.0], [20.0, 20.0], [12.0, 30.0], [28.0, 30.0]])
    f = Face((0, 0, 40, 40), lm5, 0.99, "facexlib")
    assert np.allclose(f.eye_centers()[1], [30, 10]) and np.allclose(f.mouth_corners()[0], [12, 30])
    assert np.allclose(f.five_points(), lm5) and f.area == 1600 and np.allclose(f.center, [20, 20])
    g = f.scaled(2.0, 2.0)
    assert g.box == (0, 0, 80, 80) and np.allclose(g.landmarks[0], [20.5, 20.5])
    with pytest.raises(WPlusError, match="68, 2"):
        Face((0, 0, 1, 1), np.zeros((3, 2)))


# --- facexlib adapter with a fake facexlib -------------------------------------------------------

class _FakeRetinaFace(torch.nn.Module):
    """Mimics facexlib.detection.retinaface.RetinaFace: BGR uint8 in, rows (N, 15) out.

    It really detects: dlib's HOG + 68 points on whatever copy it is given (a reduced photo, a tile,
    a crop around a face), reported as RetinaFace rows (box, score, 5 points)."""

    calls: list = []

    def __init__(self, network_name="resnet50", half=False, phase="test", device=None):
        super().__init__()
        assert network_name == "resnet50"
        self.body = torch.nn.Conv2d(3, 4, 1)

    def detect_faces(self, image, conf_threshold=0.8, nms_threshold=0.4, use_origin_size=True):
        from wplus.faces import dlib_backend

        type(self).calls.append((image.shape, conf_threshold, image.copy()))
        faces = dlib_backend.detect(normalize_image(np.ascontiguousarray(image[..., ::-1])))
        rows = [np.concatenate([f.box, [0.999], f.five_points().ravel()]) for f in faces]
        return np.array(rows, dtype=np.float32).reshape(-1, 15)


class _FakeParseNet(torch.nn.Module):
    """Mimics facexlib.parsing.parsenet.ParseNet: (1,3,512,512) in [-1,1] -> (logits, image)."""

    def __init__(self, in_size=512, out_size=512, parsing_ch=19, **kw):
        super().__init__()
        self.head = torch.nn.Conv2d(3, parsing_ch, 1)

    def forward(self, x):
        assert x.shape == (1, 3, 512, 512) and x.min() >= -1.0 and x.max() <= 1.0
        labels = torch.zeros(512, 512, dtype=torch.long)
        yy, xx = torch.meshgrid(torch.arange(512), torch.arange(512), indexing="ij")
        labels[((xx - 256) / 150) ** 2 + ((yy - 250) / 200) ** 2 < 1] = 1  # skin
        labels[yy > 470] = 18  # cloth: dropped from the mask, as the paper does
        return torch.nn.functional.one_hot(labels, 19).permute(2, 0, 1)[None].float(), x


@pytest.fixture()
def fake_facexlib(monkeypatch, tmp_path, astro_face):
    pkg = types.ModuleType("facexlib")
    pkg.__path__ = []
    det, ret, par, pnet = (types.ModuleType(n) for n in (
        "facexlib.detection", "facexlib.detection.retinaface", "facexlib.parsing", "facexlib.parsing.parsenet"))
    ret.RetinaFace = _FakeRetinaFace
    pnet.ParseNet = _FakeParseNet
    for mod in (pkg, det, ret, par, pnet):
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
    webui_gfpgan = tmp_path / "webui" / "models" / "GFPGAN"
    webui_gfpgan.mkdir(parents=True)
    state = {f"module.{k}": v for k, v in _FakeRetinaFace().state_dict().items()}  # DataParallel keys
    torch.save(state, webui_gfpgan / "detection_Resnet50_Final.pth")
    torch.save(_FakeParseNet().state_dict(), webui_gfpgan / "parsing_parsenet.pth")
    monkeypatch.setenv("WPLUS_MODELS_DIR", str(tmp_path / "ours"))
    monkeypatch.setenv("WPLUS_FACEXLIB_DIR", str(webui_gfpgan))
    monkeypatch.setattr(face_facexlib, "importable", lambda: True)
    # ground truth: the astronaut at 2048 px (so detection runs on a 1024 copy), its dlib face
    big = np.asarray(Image.fromarray(_astronaut()).resize((2048, 2048), Image.Resampling.LANCZOS))
    f4 = detect_faces(big, backend="dlib")[0]
    _FakeRetinaFace.calls = []
    face_facexlib.release()
    yield big, f4, webui_gfpgan
    face_facexlib.release()


def test_facexlib_adapter_converts_detections_to_faces(fake_facexlib):
    big, truth, _ = fake_facexlib
    faces = detect_faces(big, backend="facexlib")
    assert len(faces) == 1
    (shape, conf, first), (crop_shape, _, crop) = _FakeRetinaFace.calls
    assert shape == (1024, 1024, 3) and conf == face_facexlib.CONF_THRESHOLD  # downscaled first
    small = np.asarray(Image.fromarray(big).resize((1024, 1024), Image.Resampling.BILINEAR, reducing_gap=2.0))
    assert np.abs(first[..., ::-1].astype(int) - small).mean() < 1, "expected BGR input"
    # then the landmarks come from the face's own pixels: a crop of the 2048 image around the face,
    # at full resolution (reduced only for faces wider than REFINE_FACE_PX)
    side = max(truth.width, truth.height)
    assert side < face_facexlib.REFINE_FACE_PX and abs(max(crop_shape[:2]) - 2 * side) < 0.1 * side
    f = faces[0]
    assert f.backend == "facexlib" and f.landmarks.shape == (5, 2) and abs(f.score - 0.999) < 1e-6
    np.testing.assert_allclose(f.landmarks, truth.five_points(), atol=0.01 * side)
    np.testing.assert_allclose(f.box, truth.box, atol=0.15 * side)  # HOG boxes move with the crop
    assert faces_mod._backend("auto").NAME == "facexlib"


def test_facexlib_prepare_reference_uses_the_parser_mask(fake_facexlib):
    big, truth, _ = fake_facexlib
    kept = prepare_reference(big, backend="facexlib", size=256, keep_models=True)
    assert face_facexlib._detector.cache_info().currsize == 1 and face_facexlib._parser.cache_info().currsize == 1
    ref = prepare_reference(big, backend="facexlib", size=256)
    # networks are released after use: nothing but the adapter may stay loaded while sampling
    assert face_facexlib._detector.cache_info().currsize == 0 and face_facexlib._parser.cache_info().currsize == 0
    np.testing.assert_array_equal(kept.mask, ref.mask)
    assert ref.backend == "facexlib" and ref.mask_source == "parser"
    assert ref.mask[125, 128] > 0.99 and ref.mask[250, 128] < 0.01  # skin kept, cloth dropped
    assert ref.mask[5, 5] < 0.01 and (np.asarray(ref.masked)[5, 5] == 255).all()
    # 5-point alignment matches the 68-point one of the same face (the recipe uses 4 points)
    dlib_ref = prepare_reference(big, backend="dlib", size=256)
    # (the fake RetinaFace re-detects on a reduced crop: the same face, a slightly different frame)
    kp = truth.key_points()
    np.testing.assert_allclose(map_points(ref.matrix, kp), map_points(alignment_matrix(truth, 256), kp), atol=2.0)
    assert np.abs(np.asarray(ref.aligned, float) - np.asarray(dlib_ref.aligned, float)).mean() < 12


def test_facexlib_missing_weights_offline_names_file_and_url(fake_facexlib, monkeypatch):
    _, _, webui_dir = fake_facexlib
    (webui_dir / "detection_Resnet50_Final.pth").unlink()
    monkeypatch.setenv("WPLUS_OFFLINE", "1")
    assert not face_facexlib.available()
    assert faces_mod._backend("auto").NAME == "dlib"
    with pytest.raises(MissingWeightsError, match="detection_Resnet50_Final.pth") as e:
        detect_faces(_astronaut(), backend="facexlib")
    assert "github.com/xinntao/facexlib" in str(e.value)


def test_facexlib_not_installed_says_how_to_install(monkeypatch):
    for name in ("facexlib", "facexlib.detection", "facexlib.detection.retinaface"):
        monkeypatch.setitem(sys.modules, name, None)
    face_facexlib.release()
    with pytest.raises(WPlusError, match="pip install facexlib"):
        detect_faces(_astronaut(), backend="facexlib")
    assert not face_facexlib.available()
