"""FFHQ face alignment: the crop e4e and StyleGAN expect.

The recipe is the one FFHQ was built with, as the W+ adapter paper's `script/utils.py` `align_face`
runs it: an oriented square from the eye centres and mouth corners, then shrink, crop, and a QUAD
transform to 4096 px followed by a LANCZOS resize to the output size. Like the paper, nothing is
padded by default: where the square leaves the photo the crop is black (the QUAD transform's fill),
and the face mask then whitens that background; `enable_padding=True` gives FFHQ's reflect-pad with
a blurred blend instead. Only four points enter the recipe, so 68-point (dlib) and 5-point
(RetinaFace) landmarks align the same way.

`alignment_matrix` gives the exact affine map of that square from original pixels to aligned pixels
(pixel-index coordinates, centres on integers), so landmarks and masks can follow the face.
"""
from __future__ import annotations

from typing import Union

import numpy as np
from PIL import Image, ImageFilter

from wplus.errors import WPlusError
from wplus.faces import landmarks
from wplus.faces.image import ImageLike, NormalizedImage, normalize_image

SIZES = (256, 512, 1024)
#: The supersampled QUAD render size of the paper (and FFHQ), whatever the output size.
TRANSFORM_SIZE = 4096

FaceLike = Union["Face", np.ndarray]  # noqa: F821 (wplus.faces.detect.Face, imported lazily)


# --- geometry ------------------------------------------------------------------------------------

def key_points(face: FaceLike) -> np.ndarray:
    """(4, 2): image-left eye centre, image-right eye centre, left and right mouth corner."""
    if hasattr(face, "key_points"):
        return np.asarray(face.key_points(), dtype=np.float64)
    return landmarks.key_points(face)


def ffhq_quad(face: FaceLike) -> np.ndarray:
    """The FFHQ crop square (4, 2) in the face's pixel frame: corners TL, BL, BR, TR."""
    eye_l, eye_r, mouth_l, mouth_r = key_points(face)
    eye_avg = (eye_l + eye_r) * 0.5
    eye_to_eye = eye_r - eye_l
    eye_to_mouth = (mouth_l + mouth_r) * 0.5 - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    norm = np.hypot(*x)
    if not np.isfinite(norm) or norm < 1e-6:
        raise WPlusError("Degenerate face landmarks (eyes and mouth coincide): cannot align this face.")
    x = x / norm * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def alignment_matrix(face: FaceLike, size: int = 512) -> np.ndarray:
    """3x3 affine: original-image pixel coords -> aligned-image pixel coords (`[:2]` is the 2x3 form).

    PIL's QUAD transform sends the continuous corner quad[0]+0.5 to (0, 0), quad[3]+0.5 to (T, 0)
    and quad[1]+0.5 to (0, T); the final resize to `size` scales continuous coordinates.
    """
    quad = ffhq_quad(face)
    basis = np.stack([quad[3] - quad[0], quad[1] - quad[0]], axis=1) / size  # columns: u, v axes
    inv = np.linalg.inv(basis)
    m = np.eye(3)
    m[:2, :2] = inv
    m[:2, 2] = -inv @ quad[0] - 0.5
    return m


def map_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 3x3 (or 2x3) affine to points (..., 2)."""
    pts = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    return pts @ m[:2, :2].T + m[:2, 2]


# --- the recipe ----------------------------------------------------------------------------------

def align_face(image: ImageLike | NormalizedImage, face: FaceLike, size: int = 512, *,
               transform_size: int = TRANSFORM_SIZE, enable_padding: bool = False) -> Image.Image:
    """FFHQ-align `face` (a `Face` or its landmarks, in original-image pixels) -> RGB `size`² image.

    `transform_size` is the supersampled QUAD render size (the paper's 4096 by default).
    `enable_padding=False` (the paper's) leaves black where the crop leaves the photo;
    True reflect-pads and blurs there, as FFHQ's dataset script.
    """
    if size not in SIZES and not (16 <= size <= 4096):
        raise WPlusError(f"Aligned size must be one of {SIZES} (or 16..4096); got {size}.")
    norm = normalize_image(image)
    quad = norm.from_original(ffhq_quad(face))
    t_size = int(transform_size)
    if t_size < size:
        raise WPlusError(f"transform_size ({t_size}) must be at least the output size ({size}).")
    return _render(norm.image, quad, size, t_size, enable_padding)


def align_face_5pt(image: ImageLike | NormalizedImage, points: np.ndarray, size: int = 512,
                   **kwargs) -> Image.Image:
    """Same recipe from 5 points (eye centres, nose, mouth corners: RetinaFace order)."""
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (5, 2):
        raise WPlusError(f"Expected 5 landmarks (5, 2); got shape {points.shape}.")
    return align_face(image, points, size, **kwargs)


def _render(img: Image.Image, quad: np.ndarray, size: int, t_size: int, padding: bool) -> Image.Image:
    quad = quad.astype(np.float64).copy()
    qsize = np.hypot(*(quad[3] - quad[0]))

    # Shrink: the recipe resizes the whole photo by 1/shrink, then crops around the quad. We resize
    # only the crop window (PIL's `box`), which samples exactly the same source pixels.
    shrink = int(np.floor(qsize / size * 0.5))
    full = img.size
    if shrink > 1:
        full = (int(np.rint(img.width / shrink)), int(np.rint(img.height / shrink)))
        quad /= shrink
        qsize /= shrink

    border = max(int(np.rint(qsize * 0.1)), 3)
    lo = np.floor(quad.min(0)).astype(int)
    hi = np.ceil(quad.max(0)).astype(int)
    crop = (max(lo[0] - border, 0), max(lo[1] - border, 0),
            min(hi[0] + border, full[0]), min(hi[1] + border, full[1]))
    if crop[2] <= crop[0] or crop[3] <= crop[1]:
        raise WPlusError("The face lies outside the image: its landmarks do not belong to this photo.")
    cropping = crop[2] - crop[0] < full[0] or crop[3] - crop[1] < full[1]
    window = crop if cropping else (0, 0, full[0], full[1])
    if shrink > 1:
        sx, sy = img.width / full[0], img.height / full[1]
        img = img.resize((window[2] - window[0], window[3] - window[1]), Image.Resampling.LANCZOS,
                         box=(window[0] * sx, window[1] * sy, window[2] * sx, window[3] * sy))
    elif cropping:
        img = img.crop(crop)
    if cropping:
        quad -= crop[0:2]

    lo = np.floor(quad.min(0)).astype(int)
    hi = np.ceil(quad.max(0)).astype(int)
    pad = (max(-lo[0] + border, 0), max(-lo[1] + border, 0),
           max(hi[0] - img.width + border, 0), max(hi[1] - img.height + border, 0))
    if padding and max(pad) > border - 4:
        pad = np.maximum(pad, max(int(np.rint(qsize * 0.3)), 1))
        img = _reflect_pad(img, pad, qsize)
        quad += pad[:2]

    out = img.transform((t_size, t_size), Image.Transform.QUAD, tuple((quad + 0.5).flatten()),
                        Image.Resampling.BILINEAR)
    if size < t_size:
        out = out.resize((size, size), Image.Resampling.LANCZOS)
    return out


def _reflect_pad(img: Image.Image, pad, qsize: float) -> Image.Image:
    """Reflect-pad, blur the padded area progressively and fade it to the median colour.

    The FFHQ recipe's blend, computed per channel in float32. The Gaussian blur (sigma = 2% of the
    face square) only feeds the padding outside the photo, so it is computed on a copy reduced by
    up to sigma/4 with PIL's box-based Gaussian: scipy's exact kernel on a padded large face takes
    tens of seconds on CPU, for no visible difference; the face geometry is untouched.
    """
    left, top, right, bottom = (int(p) for p in pad)
    src = np.pad(np.asarray(img, dtype=np.uint8), ((top, bottom), (left, right), (0, 0)), "reflect")
    h, w, _ = src.shape
    blurred = _fast_gaussian(Image.fromarray(src, "RGB"), qsize * 0.02)
    xs = np.arange(w, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)
    edge_x = 1.0 - np.minimum(xs / left, (w - 1 - xs) / right)
    edge_y = 1.0 - np.minimum(ys / top, (h - 1 - ys) / bottom)
    edge = np.maximum(edge_x[None, :], edge_y[:, None])
    w_blur = np.clip(edge * 3.0 + 1.0, 0.0, 1.0)
    w_fade = np.clip(edge, 0.0, 1.0)
    out = np.empty_like(src)
    for c in range(3):
        a = src[..., c].astype(np.float32)
        a += (blurred[..., c] - a) * w_blur
        a += (np.float32(np.median(a)) - a) * w_fade
        out[..., c] = np.clip(np.rint(a), 0, 255)
    return Image.fromarray(out, "RGB")


def _fast_gaussian(img: Image.Image, sigma: float) -> np.ndarray:
    """Approximate Gaussian blur of a large RGB image as float32 (H, W, 3)."""
    f = max(1, int(float(sigma) // 4))
    small = img.reduce(f) if f > 1 else img
    small = small.filter(ImageFilter.GaussianBlur(float(sigma) / f))
    if f > 1:
        small = small.resize(img.size, Image.Resampling.BILINEAR)
    return np.asarray(small, dtype=np.float32)
