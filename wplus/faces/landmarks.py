"""The one table of face key points: where each named point sits in dlib's 68 and RetinaFace's 5.

dlib's shape predictor gives the iBUG 300-W 68 points, RetinaFace (facexlib) 5 points. Alignment
(`wplus.faces.align`), faces (`wplus.faces.detect.Face`) and masks (`wplus.faces.mask`) all read
points through this table. "left"/"right" are the image's left/right, not the person's.
"""
from __future__ import annotations

import numpy as np

from wplus.errors import WPlusError

#: iBUG 300-W 68-point layout (dlib's shape_predictor_68_face_landmarks).
IBUG68 = {
    "jaw": slice(0, 17),
    "chin": 8,
    "brows": slice(17, 27),
    "nose_tip": 30,
    "eye_left": slice(36, 42),
    "eye_right": slice(42, 48),
    "mouth_left": 48,
    "mouth_right": 54,
}
#: RetinaFace's 5 points: eye, eye, nose, mouth corner, mouth corner.
RETINA5 = {"eye_left": 0, "eye_right": 1, "nose_tip": 2, "mouth_left": 3, "mouth_right": 4}
#: The points the FFHQ alignment recipe uses, in this order (an eye is the mean of its contour).
KEY_POINTS = ("eye_left", "eye_right", "mouth_left", "mouth_right")


def _table(n: int) -> dict:
    if n == 68:
        return IBUG68
    if n == 5:
        return RETINA5
    raise WPlusError(f"Face landmarks must be (68, 2) or (5, 2) points; got {n} points.")


def point(landmarks: np.ndarray, name: str) -> np.ndarray:
    """One named point (2,): a contour (the 68-point eyes) gives its mean."""
    lm = np.asarray(landmarks, dtype=np.float64)
    where = _table(len(lm))[name]
    return lm[where].mean(0) if isinstance(where, slice) else lm[where].copy()


def key_points(landmarks: np.ndarray) -> np.ndarray:
    """(4, 2): image-left eye centre, image-right eye centre, left and right mouth corner.

    Takes 68 or 5 landmarks, or the 4 key points themselves."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape == (4, 2):
        return lm.copy()
    if lm.ndim != 2 or lm.shape[1] != 2 or len(lm) not in (68, 5):
        raise WPlusError(f"Landmarks must be (68, 2), (5, 2) or (4, 2) points; got shape {lm.shape}.")
    return np.stack([point(lm, name) for name in KEY_POINTS])


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """(5, 2) in RetinaFace order, from 68 or 5 landmarks."""
    return np.stack([point(landmarks, name) for name in RETINA5])
