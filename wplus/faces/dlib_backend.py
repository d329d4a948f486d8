"""dlib face backend: HOG frontal-face detector + the iBUG 68-point shape predictor, fully offline.

The predictor weights ship in the `face_recognition_models` package (located on disk without
importing it: its __init__ pulls in the deprecated pkg_resources).

Landmarks follow the paper's `ProcessWildImage.py`: HOG with one upsampling on the full-resolution
photo, then the shape predictor on the same pixels in each detected rectangle. The predictor is very
sensitive to its rectangle (a 2-px shift moves points by up to 6 px on a 460-px face), and dlib's
rectangles depend on the whole image's pyramid (a crop or a rescaled copy gives other ones), so:
- photos up to `RECIPE_PIXELS` are detected exactly as the paper does: the same rectangles, the
  same landmarks, the same aligned crop;
- larger photos are searched at the scale chosen for the smallest face worth finding
  (`wplus.faces.views`: ~80-px faces are found in big photos too) and the predictor runs on the
  original pixels inside the mapped-back rectangle: close to the paper's, not identical;
- the predictor always runs on the working image, which is the original photo up to
  `wplus.faces.image.MAX_WORKING_PIXELS`.
"""
from __future__ import annotations

import importlib.util
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from wplus.errors import MissingWeightsError, WPlusError
from wplus.faces import views
from wplus.faces.image import NormalizedImage

NAME = "dlib"
#: dlib's HOG window: faces from about this width (detection pixels) are found without upsampling.
HOG_MIN_FACE_PX = 80
#: One search pass covers at most this many pixels (dlib's HOG features of it: about 200 MB).
DETECT_MAX_PIXELS = 25_000_000
#: Photos up to this size are detected exactly as the paper does: HOG on the 2x-upsampled photo
#: (2048 x 2048: about 4 s and 150 MB on one CPU core; the cost grows with the photo's area).
RECIPE_PIXELS = 2048 * 2048
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


def _hog(detector, arr: np.ndarray, upsample: int) -> list[tuple[np.ndarray, float]]:
    """(box edges, score) of every face HOG finds in `arr` with `upsample` doublings."""
    rects, scores, _ = detector.run(np.ascontiguousarray(arr), upsample, 0.0)
    return [(np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], dtype=np.float64), float(s))
            for r, s in zip(rects, scores) if s >= MIN_SCORE]


def _search(detector, norm: NormalizedImage) -> list[tuple[np.ndarray, float]]:
    """Boxes (working pixels) of the faces of at least ~MIN_FACE_PX original pixels."""
    found = []
    for view in views.detection_views(norm, HOG_MIN_FACE_PX, DETECT_MAX_PIXELS, DETECT_MAX_PIXELS):
        found += [(view.box_to_working(box), score, None) for box, score in _hog(detector, view.pixels, 0)]
    return [(box, score) for box, score, _ in views.merge(found)]


def detect(norm: NormalizedImage) -> list:
    """Faces in a normalised image, landmarks and boxes in original-image pixels."""
    from wplus.faces.detect import Face

    detector, predictor = _models()
    dlib = _import_dlib()
    work = norm.image
    arr = np.ascontiguousarray(np.asarray(work))
    with _lock:
        if work.width * work.height <= RECIPE_PIXELS:
            found = _hog(detector, arr, 1)  # the paper's detection itself
        else:
            found = _search(detector, norm)
        faces = []
        for box, score in found:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            shape = predictor(arr, dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
            lm = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            faces.append(Face(tuple(views.box_to_original(norm, box)), norm.to_original(lm), score, NAME))
    return faces
