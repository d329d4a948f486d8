"""Face detection behind one interface, face choice, and the one-call reference preparation.

Backends: "dlib" (HOG detector + 68-point predictor, fully offline; the paper's own alignment) and
"facexlib" (RetinaFace 5 points + ParseNet mask; the WebUI's face library). "auto" prefers facexlib
when it is installed and its weights are present, else dlib.

All coordinates are pixel indices (pixel centres on integers) in the ORIGINAL image, upright after
EXIF orientation, however much the image was reduced for detection.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image

from wplus.errors import FaceNotFoundError, MultipleFacesError, WPlusError
from wplus.faces import landmarks
from wplus.faces.image import ImageLike, NormalizedImage, normalize_image

BACKENDS = ("dlib", "facexlib")
_MODULES = {"dlib": "wplus.faces.dlib_backend", "facexlib": "wplus.faces.facexlib_backend"}


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face.

    box: (x0, y0, x1, y1) in original-image pixels. landmarks: (68, 2) for dlib (iBUG 300-W order)
    or (5, 2) for facexlib (image-left eye, image-right eye, nose, left mouth corner, right mouth
    corner). "left"/"right" always mean the image's left/right, not the person's.
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float = 1.0
    backend: str = "dlib"

    def __post_init__(self) -> None:
        lm = np.asarray(self.landmarks, dtype=np.float64)
        if lm.shape not in ((68, 2), (5, 2)):
            raise WPlusError(f"Face landmarks must be (68, 2) or (5, 2); got {lm.shape}.")
        object.__setattr__(self, "landmarks", lm)
        object.__setattr__(self, "box", tuple(float(v) for v in self.box))

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2])

    def eye_centers(self) -> tuple[np.ndarray, np.ndarray]:
        """(image-left eye, image-right eye): the mean of each eye's 6 contour points for dlib."""
        return landmarks.point(self.landmarks, "eye_left"), landmarks.point(self.landmarks, "eye_right")

    def mouth_corners(self) -> tuple[np.ndarray, np.ndarray]:
        """(image-left corner, image-right corner) of the mouth."""
        return landmarks.point(self.landmarks, "mouth_left"), landmarks.point(self.landmarks, "mouth_right")

    def nose_tip(self) -> np.ndarray:
        return landmarks.point(self.landmarks, "nose_tip")

    def key_points(self) -> np.ndarray:
        """(4, 2): the eye centres and mouth corners, the only points the FFHQ recipe uses."""
        return landmarks.key_points(self.landmarks)

    def five_points(self) -> np.ndarray:
        """(5, 2) in RetinaFace order, for either backend."""
        return landmarks.five_points(self.landmarks)

    def scaled(self, sx: float, sy: float) -> "Face":
        """The same face in an image resized by (sx, sy) (pixel-index convention)."""
        box = np.array(self.box).reshape(2, 2) * [sx, sy]
        lm = (self.landmarks + 0.5) * [sx, sy] - 0.5
        return Face(tuple(box.ravel()), lm, self.score, self.backend)

    def to_dict(self) -> dict:
        """JSON-friendly summary (CLI output, API)."""
        return {"box": [round(v, 1) for v in self.box], "score": round(float(self.score), 3),
                "backend": self.backend, "landmarks": np.round(self.landmarks, 2).tolist()}


# --- detection -----------------------------------------------------------------------------------

def _backend(name: str):
    if name == "auto":
        fx = importlib.import_module(_MODULES["facexlib"])
        name = "facexlib" if fx.available() else "dlib"
    if name not in _MODULES:
        raise WPlusError(f"Unknown face backend {name!r}: use one of {', '.join(BACKENDS)} or 'auto'.")
    return importlib.import_module(_MODULES[name])


def detect_faces(image: ImageLike | NormalizedImage, backend: str = "dlib") -> list[Face]:
    """All faces in `image`, ordered left to right (by box centre).

    image: path, bytes, PIL image or numpy array (RGB); see `wplus.faces.image.normalize_image`.
    An image without faces gives an empty list (use `pick_face` for the error).
    """
    norm = normalize_image(image)
    faces = _backend(backend).detect(norm)
    return sorted(faces, key=lambda f: (f.center[0], f.center[1]))


def pick_face(faces: Sequence[Face], index: int | None = None, *, require_single: bool = False) -> Face:
    """Choose one face: `faces[index]` (left-to-right order), else the largest.

    require_single: refuse to guess when several faces are present and no index is given.
    """
    n = len(faces)
    if n == 0:
        raise FaceNotFoundError(
            "No face found in the reference image. Use a photo where one face is clearly visible, "
            "frontal and at least about 80 pixels wide.")
    if index is not None:
        if not -n <= int(index) < n:
            raise FaceNotFoundError(
                f"Face index {index} is out of range: {n} face{'s' if n > 1 else ''} found "
                f"(indices 0..{n - 1}, left to right).")
        return faces[int(index)]
    if n > 1 and require_single:
        raise MultipleFacesError(
            f"{n} faces found in the reference image; choose one with a face index 0..{n - 1} "
            "(left to right) or crop the photo to one person.")
    return max(faces, key=lambda f: f.area)


def release_models() -> None:
    """Free the cached detector/predictor/parser weights of every loaded backend."""
    import sys
    for module in _MODULES.values():
        mod = sys.modules.get(module)
        if mod is not None:
            mod.release()


# --- one call from photo to encoder input --------------------------------------------------------

@dataclass(eq=False)
class PreparedFace:
    """A reference face ready for e4e.

    aligned: FFHQ-aligned RGB crop (background kept); masked: the same with the background set to
    white (the e4e input, as in the paper); mask: float32 (size, size) in [0, 1], 1 = face;
    face: the chosen face (original-image pixels); faces: every face found (left to right);
    image_hash: sha256 of the normalised image pixels (cache key); matrix: 3x3 affine from
    original pixels to aligned pixels; backend: the backend that ran; mask_source: "parser" or
    "landmarks".
    """

    aligned: Image.Image
    masked: Image.Image
    mask: np.ndarray
    face: Face
    faces: list[Face]
    image_hash: str
    matrix: np.ndarray = field(default_factory=lambda: np.eye(3))
    backend: str = "dlib"
    mask_source: str = "landmarks"

    @property
    def face_index(self) -> int:
        return next(i for i, f in enumerate(self.faces) if f is self.face)


def prepare_reference(image: ImageLike | NormalizedImage, face_index: int | None = None,
                      backend: str = "dlib", size: int = 256, *,
                      require_single: bool = False, keep_models: bool = False) -> PreparedFace:
    """Photo -> detected, chosen, FFHQ-aligned, background-whitened face (stable signature).

    image: path / bytes / PIL / numpy; face_index: which face (left to right), default the largest;
    backend: "dlib" | "facexlib" | "auto"; size: aligned output (256 for e4e, 512, 1024).
    Raises ImageInputError (unreadable image), FaceNotFoundError (no face, bad index),
    MultipleFacesError (several faces with require_single and no index).
    keep_models: keep facexlib's torch networks loaded for the next call (batch data preparation);
    by default they are released so nothing but the adapter stays in memory while sampling.
    """
    from wplus.faces.align import align_face, alignment_matrix
    from wplus.faces.mask import face_mask, remove_background

    norm = normalize_image(image)
    mod = _backend(backend)
    try:
        faces = sorted(mod.detect(norm), key=lambda f: (f.center[0], f.center[1]))
        face = pick_face(faces, face_index, require_single=require_single)
        aligned = align_face(norm, face, size)
        matrix = alignment_matrix(face, size)
        mask, source = None, "landmarks"
        parse = getattr(mod, "parse_mask", None)
        if parse is not None:
            mask = parse(aligned)
            source = "parser" if mask is not None else source
    finally:
        if not keep_models and getattr(mod, "HOLDS_TORCH_MODELS", False):
            mod.release()
    if mask is None:
        mask = face_mask(face, matrix, size)
    return PreparedFace(aligned=aligned, masked=remove_background(aligned, mask), mask=mask,
                        face=face, faces=faces, image_hash=norm.sha256, matrix=matrix,
                        backend=mod.NAME, mask_source=source)
