"""Detection copies of the working image and the way back: one shrink/map-back for every backend.

A detector finds faces down to some size in its own pixels (dlib's HOG window: about 80 px;
RetinaFace: about 20 px). The smallest face worth finding is `MIN_FACE_PX` wide in the ORIGINAL
photo (the README's advice), so each backend detects at the scale that makes such a face detectable,
whatever the photo's size — not at a fixed longest side. A copy above the backend's per-view pixel
budget is covered by overlapping tiles at that scale plus one global copy for the faces too big for
a tile's overlap. The total work is bounded (`total_pixels`); beyond it the smallest face found
grows with the photo.

Coordinates: a `View` knows its scale and where it sits in the working image; boxes are edges
(continuous), points are pixel indices (centres on integers), as everywhere in `wplus.faces`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

#: The smallest face (box width, original pixels) every backend is set up to find.
MIN_FACE_PX = 80


@dataclass(frozen=True)
class View:
    """A detection copy of (a region of) the working image."""

    pixels: np.ndarray  # (h, w, 3) uint8 RGB
    scale: float  # view pixels per working pixel
    origin: tuple[float, float] = (0.0, 0.0)  # working-pixel edge position of the view's corner

    def box_to_working(self, box) -> np.ndarray:
        """(x0, y0, x1, y1) view edges -> working-image edges."""
        b = np.asarray(box, dtype=np.float64).reshape(2, 2) / self.scale + self.origin
        return b.ravel()

    def points_to_working(self, points) -> np.ndarray:
        """(..., 2) view pixel indices -> working-image pixel indices."""
        pts = np.asarray(points, dtype=np.float64)
        return (pts + 0.5) / self.scale - 0.5 + np.asarray(self.origin)


def make_view(work: Image.Image, scale: float, region: tuple[int, int, int, int] | None = None) -> View:
    """`work` (or its integer `region`) resized by `scale` (1.0: the pixels themselves)."""
    x0, y0, x1, y1 = region or (0, 0, work.width, work.height)
    img = work if region is None else work.crop((x0, y0, x1, y1))
    if abs(scale - 1.0) > 1e-9:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0 if scale < 1 else None)
        scale_x = size[0] / (x1 - x0)
    else:
        scale_x = 1.0
    return View(np.ascontiguousarray(np.asarray(img.convert("RGB"))), scale_x, (float(x0), float(y0)))


def detection_scale(norm, detector_min_px: float, view_pixels: int, total_pixels: int) -> float:
    """View pixels per working pixel at which a `MIN_FACE_PX` face of the original is detectable.

    Never less than the largest copy that fits one view (and at most 1 for that), never more than
    `total_pixels` of work."""
    work_w, work_h = norm.image.size
    area = float(work_w * work_h)
    working_per_original = min(norm.scale)
    need = detector_min_px / (MIN_FACE_PX * working_per_original)
    fit = min(1.0, math.sqrt(view_pixels / area))
    return min(max(need, fit), math.sqrt(total_pixels / area))


def detection_views(norm, detector_min_px: float, view_pixels: int, total_pixels: int) -> list[View]:
    """The copies a backend runs its detector on: one view, or a global copy plus tiles."""
    work = norm.image
    area = work.width * work.height
    scale = detection_scale(norm, detector_min_px, view_pixels, total_pixels)
    if area * scale ** 2 <= view_pixels * 1.001:
        return [make_view(work, scale)]
    fit = math.sqrt(view_pixels / area)
    views = [make_view(work, fit)]
    side = int(math.sqrt(view_pixels))  # tile side, view pixels
    # Faces the global copy misses are below detector_min/fit working px: the overlap holds them.
    overlap = min(side // 2, int(1.25 * detector_min_px * scale / fit) + 8)
    tile = side / scale  # working px
    stride = (side - overlap) / scale
    for y0 in _starts(work.height, tile, stride):
        for x0 in _starts(work.width, tile, stride):
            region = (x0, y0, min(work.width, int(math.ceil(x0 + tile))), min(work.height, int(math.ceil(y0 + tile))))
            views.append(make_view(work, scale, region))
    return views


def _starts(length: int, tile: float, stride: float) -> list[int]:
    if tile >= length:
        return [0]
    n = int(math.ceil((length - tile) / stride)) + 1
    return sorted({int(round(min(i * stride, length - tile))) for i in range(n)})


def iou(a, b) -> float:
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0


Found = tuple[np.ndarray, float, object]


def merge(found: list[Found], threshold: float = 0.3) -> list[Found]:
    """Drop duplicates of one face seen by several views: (box, score, extra), best score kept."""
    kept: list[tuple[np.ndarray, float, object]] = []
    for item in sorted(found, key=lambda f: -f[1]):
        if all(iou(item[0], k[0]) <= threshold for k in kept):
            kept.append(item)
    return kept


def box_to_original(norm, box) -> np.ndarray:
    """Working-image box edges -> original-image edges."""
    sx, sy = norm.scale
    return (np.asarray(box, dtype=np.float64).reshape(2, 2) / [sx, sy]).ravel()
