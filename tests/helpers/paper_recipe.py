"""The W+ adapter paper's face alignment, re-implemented for tests from reading its scripts.

csxmli2016/w-plus-adapter aligns in-the-wild photos with `script/ProcessWildImage.py` (landmarks)
and `script/utils.py` `align_face` (the crop). What they do, step by step:

- landmarks: the whole photo is read as RGB at full resolution (no EXIF rotation); dlib's HOG
  frontal-face detector runs on it with one upsampling; the 68-point shape predictor runs on the same
  full-resolution pixels in each detected rectangle; points are dlib's integer pixel positions;
- crop: FFHQ's oriented square from the eye centres (mean of each eye's six points) and the mouth
  corners (points 48 and 54); "shrink" resizes the WHOLE photo by 1/shrink (LANCZOS) when the square
  is more than 4x the output; the square plus a 10 % border is cropped; no padding
  (`enable_padding = False`, so the QUAD transform fills black where the square leaves the photo);
  a QUAD transform (BILINEAR) to 4096 px, then a LANCZOS resize to 512.

Nothing here is shared with `wplus/`: this is the independent reference our pipeline is tested
against. It is slow on big photos (HOG on the 2x-upsampled full image) and meant for tests only.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

OUTPUT_SIZE = 512
TRANSFORM_SIZE = 4096


@lru_cache(maxsize=1)
def _dlib_models():
    import importlib.util

    import dlib

    spec = importlib.util.find_spec("face_recognition_models")
    root = Path(list(spec.submodule_search_locations)[0])
    predictor = dlib.shape_predictor(str(root / "models" / "shape_predictor_68_face_landmarks.dat"))
    return dlib.get_frontal_face_detector(), predictor


def recipe_landmarks(rgb: np.ndarray) -> list[np.ndarray]:
    """Every face's 68 points (int pixel positions), detected and predicted on the full image."""
    detector, predictor = _dlib_models()
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    faces = []
    for rect in detector(rgb, 1):
        shape = predictor(rgb, rect)
        faces.append(np.array([[p.x, p.y] for p in shape.parts()]))
    return faces


def recipe_quad(lm: np.ndarray) -> tuple[np.ndarray, float]:
    """FFHQ's crop square (TL, BL, BR, TR) from 68 points, and its side."""
    lm = np.asarray(lm, dtype=np.float64)
    left_eye = lm[36:42].mean(axis=0)
    right_eye = lm[42:48].mean(axis=0)
    eyes_mid = (left_eye + right_eye) / 2
    across = right_eye - left_eye
    down = (lm[48] + lm[54]) / 2 - eyes_mid
    side = across - np.array([-down[1], down[0]])  # across minus `down` turned a quarter
    side = side / np.hypot(*side) * max(2.0 * np.hypot(*across), 1.8 * np.hypot(*down))
    up = np.array([-side[1], side[0]])
    centre = eyes_mid + 0.1 * down
    quad = np.array([centre - side - up, centre - side + up, centre + side + up, centre + side - up])
    return quad, 2.0 * float(np.hypot(*side))


def recipe_align(img: Image.Image, lm: np.ndarray, output_size: int = OUTPUT_SIZE,
                 transform_size: int = TRANSFORM_SIZE) -> Image.Image:
    """The paper's aligned crop of the face with landmarks `lm` (black where it leaves the photo)."""
    quad, qsize = recipe_quad(lm)
    factor = int(np.floor(qsize / output_size * 0.5))
    if factor > 1:
        size = (int(np.rint(img.width / factor)), int(np.rint(img.height / factor)))
        img = img.resize(size, Image.Resampling.LANCZOS)
        quad = quad / factor
        qsize = qsize / factor
    margin = max(int(np.rint(qsize * 0.1)), 3)
    x0 = max(int(np.floor(quad[:, 0].min())) - margin, 0)
    y0 = max(int(np.floor(quad[:, 1].min())) - margin, 0)
    x1 = min(int(np.ceil(quad[:, 0].max())) + margin, img.width)
    y1 = min(int(np.ceil(quad[:, 1].max())) + margin, img.height)
    if x1 - x0 < img.width or y1 - y0 < img.height:
        img = img.crop((x0, y0, x1, y1))
        quad = quad - [x0, y0]
    out = img.transform((transform_size, transform_size), Image.Transform.QUAD,
                        tuple((quad + 0.5).ravel()), Image.Resampling.BILINEAR)
    if output_size < transform_size:
        out = out.resize((output_size, output_size), Image.Resampling.LANCZOS)
    return out


def inside_photo(img_size: tuple[int, int], lm: np.ndarray, output_size: int = OUTPUT_SIZE,
                 erode: int = 3) -> np.ndarray:
    """(output_size, output_size) bool: aligned pixels whose source lies inside the photo.

    A pixel's centre is mapped back through the square's affine; `erode` pixels (at output size)
    are dropped at the photo's edge, where bilinear sampling mixes in the black fill."""
    quad, _ = recipe_quad(lm)
    u = (quad[3] - quad[0]) / output_size
    v = (quad[1] - quad[0]) / output_size
    ys, xs = np.mgrid[:output_size, :output_size] + 0.5
    # continuous source coordinates (the QUAD transform is given the corners + 0.5)
    src = quad[0] + 0.5 + xs[..., None] * u + ys[..., None] * v
    px = np.hypot(*u) * erode
    w, h = img_size
    return ((src[..., 0] >= px) & (src[..., 0] <= w - px) & (src[..., 1] >= px) & (src[..., 1] <= h - px))
