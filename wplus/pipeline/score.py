"""How close a generated face is to the reference person: dlib's 128-d face-recognition embedding.

    ref = face_embedding("alice.jpg")                # (128,) or None when no face is found
    s = identity_score(image, ref)                    # Score(similarity, distance) or Score(None, None)
    print(s.label())                                  # "sim 0.93 · dist 0.28 (same person)"

dlib's ResNet (`dlib_face_recognition_resnet_model_v1.dat`, shipped in `face-recognition-models`, so
fully offline) maps a face to a 128-d vector; dlib calls two faces the same person when the Euclidean
distance between their vectors is below 0.6 (99.38 % on LFW). The vectors have length ~1, so the
cosine similarity is reported beside it. Faces are found with the project's dlib detector and its
68 landmarks (the largest face when there are several).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from wplus.errors import MissingWeightsError

#: dlib's decision threshold on the Euclidean distance between two embeddings.
SAME_PERSON_DISTANCE = 0.6
RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"


@dataclass(frozen=True)
class Score:
    similarity: float | None  # cosine similarity of the two embeddings, -1..1 (None: no face)
    distance: float | None  # Euclidean distance; < 0.6 = the same person by dlib's threshold

    @property
    def found(self) -> bool:
        return self.distance is not None

    @property
    def same_person(self) -> bool:
        return self.found and self.distance < SAME_PERSON_DISTANCE

    def label(self) -> str:
        if not self.found:
            return "no face found"
        verdict = "same person" if self.same_person else "different person"
        return f"sim {self.similarity:.2f} · dist {self.distance:.2f} ({verdict})"

    def infotext(self) -> str:
        """Compact form for the image parameters: `0.93/0.28` (similarity/distance) or `no face`."""
        return f"{self.similarity:.3f}/{self.distance:.3f}" if self.found else "no face"


@lru_cache(maxsize=1)
def _recognizer():
    from wplus.faces.dlib_backend import _import_dlib, _predictor_path

    path = _predictor_path().with_name(RECOGNITION_FILE)
    if not path.is_file():
        raise MissingWeightsError(f"dlib's face-recognition model ({RECOGNITION_FILE}) was not found next to "
                                  f"{_predictor_path().name}; it comes with: pip install face-recognition-models")
    return _import_dlib().face_recognition_model_v1(str(path))


def release() -> None:
    _recognizer.cache_clear()


def face_embedding(image: Any, face_index: int | None = None) -> np.ndarray | None:
    """(128,) float64 embedding of the chosen face (default: the largest), or None when there is none."""
    from wplus.faces.detect import detect_faces, pick_face
    from wplus.faces.dlib_backend import _import_dlib
    from wplus.faces.image import normalize_image

    norm = normalize_image(image)
    faces = detect_faces(norm, backend="dlib")
    if not faces:
        return None
    face = pick_face(faces, face_index)
    dlib = _import_dlib()
    pixels = np.ascontiguousarray(np.asarray(norm.image))  # faces come in original pixels: back to the working copy
    corners = norm.from_original(np.array([face.box[:2], face.box[2:]]))
    x0, y0, x1, y1 = (int(round(v)) for v in corners.ravel())
    points = [dlib.point(int(round(x)), int(round(y))) for x, y in norm.from_original(face.landmarks)]
    shape = dlib.full_object_detection(dlib.rectangle(x0, y0, x1 - 1, y1 - 1), points)
    return np.asarray(_recognizer().compute_face_descriptor(pixels, shape), dtype=np.float64)


def compare(a: np.ndarray | None, b: np.ndarray | None) -> Score:
    if a is None or b is None:
        return Score(None, None)
    cos = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return Score(cos, float(np.linalg.norm(a - b)))


def identity_score(image: Any, reference: Any) -> Score:
    """Score of `image`'s face against `reference` (an image, or an embedding from `face_embedding`)."""
    ref = reference if isinstance(reference, np.ndarray) else face_embedding(reference)
    return compare(face_embedding(image), ref)


SEPARATOR = "; "  # between the scores of a grid's images, in cell order, in `Wplus score`


def format_scores(scores: list[Score]) -> str:
    """`Wplus score` of several images: `0.930/0.280; no face; 0.851/0.330` (split on SEPARATOR)."""
    return SEPARATOR.join(s.infotext() for s in scores)
