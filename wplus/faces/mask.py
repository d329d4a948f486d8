"""Face masks on the aligned crop, and background removal (background set to white, as the paper).

With a face parser (facexlib ParseNet/BiSeNet) the mask is every parsed class except background and
clothes, as the paper keeps them. Without one it comes from the landmarks: the convex hull of the
jaw line plus the brows pushed up over the forehead (68 points), or an ellipse from the eyes and
mouth (5 points); feathered so the white background blends without a hard seam.
"""
from __future__ import annotations

import numpy as np
import scipy.ndimage
from PIL import Image, ImageDraw

from wplus.errors import WPlusError
from wplus.faces.align import map_points
from wplus.faces.landmarks import IBUG68, key_points

#: Labels of the two facexlib parsers (CelebAMask-HQ classes in each network's own order).
PARSER_LABELS = {
    "parsenet": ["background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow",
                 "l_ear", "r_ear", "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l",
                 "neck", "cloth"],
    "bisenet": ["background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear",
                "r_ear", "ear_r", "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth",
                "hair", "hat"],
}
#: Classes dropped from the mask, as the paper's ProcessWildImage does (it keeps hair, hat, neck).
DROPPED_CLASSES = ("background", "cloth")
#: How far the brows are pushed up, as a fraction of the brow-to-chin distance.
FOREHEAD = 0.45


def feather(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-soften a [0, 1] mask (sigma in pixels)."""
    if sigma <= 0:
        return mask.astype(np.float32)
    return np.clip(scipy.ndimage.gaussian_filter(mask.astype(np.float32), sigma), 0.0, 1.0)


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Monotone-chain convex hull, counter-clockwise, (k, 2)."""
    pts = sorted(map(tuple, np.asarray(points, dtype=np.float64)))
    if len(pts) < 3:
        return np.array(pts)

    def half(seq):
        chain: list = []
        for p in seq:
            while len(chain) >= 2 and np.cross(np.subtract(chain[-1], chain[-2]),
                                               np.subtract(p, chain[-2])) <= 0:
                chain.pop()
            chain.append(p)
        return chain[:-1]

    return np.array(half(pts) + half(pts[::-1]))


def _fill(polygon: np.ndarray, size: int) -> np.ndarray:
    img = Image.new("L", (size, size), 0)
    ImageDraw.Draw(img).polygon([tuple(p) for p in polygon], fill=255)
    return np.asarray(img, dtype=np.float32) / 255.0


def landmark_outline(points: np.ndarray) -> np.ndarray:
    """68 aligned points -> the face outline: jaw hull plus brows raised over the forehead."""
    pts = np.asarray(points, dtype=np.float64)
    jaw, brows = pts[IBUG68["jaw"]], pts[IBUG68["brows"]]
    up = brows.mean(0) - pts[IBUG68["chin"]]  # chin -> brows: the face's own "up"
    raised = brows + up * FOREHEAD
    return _convex_hull(np.concatenate([jaw, brows, raised]))


def landmark_mask(points: np.ndarray, size: int, sigma: float | None = None) -> np.ndarray:
    """Mask (size, size) float32 from landmarks already in aligned pixels ((68, 2) or (5, 2))."""
    pts = np.asarray(points, dtype=np.float64)
    sigma = size / 128 if sigma is None else sigma
    if pts.shape == (68, 2):
        hull = landmark_outline(pts)
        # Grow by ~1.5 sigma so the feathered edge falls outside the jaw, not across the cheeks.
        centre = hull.mean(0)
        hull = centre + (hull - centre) * (1.0 + 1.5 * sigma / max(np.ptp(hull[:, 0]), 1.0))
        return feather(_fill(hull, size), sigma)
    if pts.shape == (5, 2):
        return feather(_fill(_five_point_ellipse(pts), size), sigma)
    raise WPlusError(f"Landmark mask needs (68, 2) or (5, 2) points; got {pts.shape}.")


def _five_point_ellipse(pts: np.ndarray, n: int = 64) -> np.ndarray:
    eye_l, eye_r, mouth_l, mouth_r = key_points(pts)
    eye_avg, mouth_avg = (eye_l + eye_r) / 2, (mouth_l + mouth_r) / 2
    down = mouth_avg - eye_avg
    h = np.hypot(*down)
    down = down / max(h, 1e-6)
    right = np.array([-down[1], down[0]]) * -1  # image-right, perpendicular to down
    centre = eye_avg + down * (0.35 * h)
    a = max(np.hypot(*(eye_r - eye_l)) * 1.05, h * 1.1)  # half width
    b = h * 1.75  # half height: forehead to chin
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return centre + np.outer(np.cos(t) * a, right) + np.outer(np.sin(t) * b, down)


def face_mask(face, matrix: np.ndarray, size: int, sigma: float | None = None) -> np.ndarray:
    """Landmark mask for `face` (original pixels) on the crop made with `matrix` (3x3 affine)."""
    return landmark_mask(map_points(matrix, face.landmarks), size, sigma)


def parsing_mask(labels: np.ndarray, parser: str = "parsenet", size: int | None = None,
                 sigma: float | None = None) -> np.ndarray:
    """Parser class map (H, W) -> float mask in [0, 1], resized to `size`, feathered."""
    names = PARSER_LABELS.get(parser)
    if names is None:
        raise WPlusError(f"Unknown face parser {parser!r}: use one of {sorted(PARSER_LABELS)}.")
    labels = np.asarray(labels)
    keep = np.ones(len(names), dtype=bool)
    for cls in DROPPED_CLASSES:
        keep[names.index(cls)] = False
    binary = keep[np.clip(labels, 0, len(names) - 1)].astype(np.float32)
    if size is not None and binary.shape != (size, size):
        img = Image.fromarray(np.uint8(binary * 255), "L").resize((size, size), Image.Resampling.BILINEAR)
        binary = np.asarray(img, dtype=np.float32) / 255.0
    side = binary.shape[0]
    return feather(binary, 1.1 * side / 512 if sigma is None else sigma)  # the paper: 5x5 blur at 512


def remove_background(aligned: Image.Image, mask: np.ndarray) -> Image.Image:
    """Blend the crop onto white with `mask` (1 = keep): the encoder input of the paper."""
    rgb = np.asarray(aligned.convert("RGB"), dtype=np.float32)
    m = np.asarray(mask, dtype=np.float32)
    if m.shape != rgb.shape[:2]:
        raise WPlusError(f"Mask shape {m.shape} does not match the aligned image {rgb.shape[:2]}.")
    out = rgb * m[..., None] + 255.0 * (1.0 - m[..., None])
    return Image.fromarray(np.uint8(np.clip(np.rint(out), 0, 255)), "RGB")
