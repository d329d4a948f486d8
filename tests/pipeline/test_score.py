"""The identity score on real photos (the paper's test faces): dlib's 128-d face embedding."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from conftest import OFFICIAL

pytestmark = pytest.mark.needs_shared  # the fixture adapter/UNet, the paper's photos and directions
E4E = OFFICIAL / "test_data" / "e4e"


def test_same_photo_same_person_others_apart_faceless_says_so():
    from wplus.pipeline.score import SAME_PERSON_DISTANCE, compare, face_embedding, identity_score

    ref = face_embedding(E4E / "1.png")
    assert ref.shape == (128,)
    photo = Image.open(E4E / "1.png").convert("RGB")
    buf = io.BytesIO()
    photo.resize((400, 400)).save(buf, "JPEG", quality=80)  # the same photo, resized and re-compressed
    same = identity_score(buf.getvalue(), ref)
    assert same.same_person and same.distance < 0.2 and same.similarity > 0.98
    assert "same person" in same.label()
    others = [compare(face_embedding(E4E / f"{i}.png"), ref) for i in (2, 3, 4, 5)]
    assert all(s.found and not s.same_person and s.distance > SAME_PERSON_DISTANCE + 0.1 for s in others)
    assert all(s.similarity < same.similarity for s in others)
    blank = identity_score(np.full((256, 256, 3), 200, np.uint8), ref)
    assert not blank.found and blank.label() == "no face found" and blank.infotext() == "no face"


def test_embedding_is_dlibs_own():
    """Our detector + landmarks feed dlib's network exactly as dlib's own pipeline does."""
    import dlib

    from wplus.faces.dlib_backend import _predictor_path
    from wplus.pipeline.score import RECOGNITION_FILE, face_embedding

    img = np.asarray(Image.open(E4E / "2.png").convert("RGB"))
    rect = dlib.get_frontal_face_detector()(img, 1)[0]
    shape = dlib.shape_predictor(str(_predictor_path()))(img, rect)
    net = dlib.face_recognition_model_v1(str(_predictor_path().with_name(RECOGNITION_FILE)))
    theirs = np.asarray(net.compute_face_descriptor(img, shape))
    assert np.abs(face_embedding(E4E / "2.png") - theirs).max() < 1e-6
