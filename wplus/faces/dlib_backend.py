"""dlib face backend: HOG frontal-face detector + the iBUG 68-point shape predictor, fully offline.

The predictor weights ship in the `face_recognition_models` package (located on disk without
importing it: its __init__ pulls in the deprecated pkg_resources). Detection runs on a copy whose
longest side is at most DETECT_MAX_SIDE (HOG at full resolution is slow on CPU); small images are
upsampled once so faces down to ~40 px are found. Landmarks are predicted on the working image and
returned in original-image pixels.
"""
from __future__ import annotations

import importlib.util
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from wplus.errors import MissingWeightsError, WPlusError
from wplus.faces.image import NormalizedImage

NAME = "dlib"
DETECT_MAX_SIDE = 1024
#: Detection copies at most this long are upsampled once (dlib's HOG window is 80 px).
UPSAMPLE_MAX_SIDE = 800
#: HOG scores below this are mostly false positives or heavily blurred background faces.
MIN_SCORE = 0.25
PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
_INSTALL = "pip install dlib-bin face-recognition-models"
_lock = threading.Lock()


def available() -> bool:
    return importlib.util.find_spec("dlib") is not None and _predictor_path(required=False) is not None


def _import_dlib():
    try:
        import dlib
    except ImportError as e:
        raise WPlusError(f"The dlib face backend needs dlib: {_INSTALL} (or use backend='facexlib').") from e
    return dlib


def _predictor_path(required: bool = True) -> Path | None:
    spec = importlib.util.find_spec("face_recognition_models")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for root in locations:
        path = Path(root) / "models" / PREDICTOR_FILE
        if path.is_file():
            return path
    if required:
        raise MissingWeightsError(
            f"dlib's 68-point landmark model ({PREDICTOR_FILE}) was not found; it comes with the "
            f"face_recognition_models package: {_INSTALL}.")
    return None


@lru_cache(maxsize=1)
def _models():
    dlib = _import_dlib()
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(_predictor_path()))


def release() -> None:
    _models.cache_clear()


def _detection_copy(img: Image.Image) -> tuple[np.ndarray, float, float]:
    k = min(1.0, DETECT_MAX_SIDE / max(img.size))
    small = img
    if k < 1.0:
        small = img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))),
                           Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(small), small.width / img.width, small.height / img.height


def _hog(detector, arr: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
    tries = (1,) if max(arr.shape[:2]) <= UPSAMPLE_MAX_SIDE else (0, 1)
    for upsample in tries:
        rects, scores, _ = detector.run(arr, upsample, 0.0)
        found = [((r.left(), r.top(), r.right() + 1, r.bottom() + 1), float(s))
                 for r, s in zip(rects, scores) if s >= MIN_SCORE]
        if found:
            return found
    return []


def detect(norm: NormalizedImage) -> list:
    """Faces in a normalised image, landmarks and boxes in original-image pixels."""
    from wplus.faces.detect import Face

    detector, predictor = _models()
    dlib = _import_dlib()
    work = norm.image
    arr, sx, sy = _detection_copy(work)
    with _lock:
        found = _hog(detector, arr)
        full = np.asarray(work) if found else None
        faces = []
        for (x0, y0, x1, y1), score in found:
            # Back to working pixels (box edges are continuous coordinates: plain division).
            box = np.array([x0 / sx, y0 / sy, x1 / sx, y1 / sy])
            rect = dlib.rectangle(*(int(round(v)) for v in (box[0], box[1], box[2] - 1, box[3] - 1)))
            shape = predictor(full, rect)
            lm = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            faces.append(_to_original(norm, box, lm, score, Face))
    return faces


def _to_original(norm: NormalizedImage, box: np.ndarray, lm: np.ndarray, score: float, face_cls):
    sx, sy = norm.scale
    box_o = box.reshape(2, 2) / [sx, sy]
    return face_cls(tuple(box_o.ravel()), norm.to_original(lm), score, NAME)
