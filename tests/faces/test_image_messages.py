"""Photo inputs the fuzz campaign tripped on: a closed file object is named as closed (not blamed on the
photo's format), and NaN/inf pixels name the input and the fix."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from wplus.errors import ImageInputError
from wplus.faces.image import normalize_image


def test_a_closed_file_object_is_named_as_closed(tmp_path):
    path = tmp_path / "face.png"
    Image.new("RGB", (8, 8), "white").save(path)
    with open(path, "rb") as f:
        pass
    with pytest.raises(ImageInputError) as info:
        normalize_image(f)
    assert str(info.value) == (f"The file object '{path}' is closed: pass it while it is open (inside its `with` "
                               "block), or pass the photo's path or bytes instead.")
    data = io.BytesIO(path.read_bytes())
    data.close()
    with pytest.raises(ImageInputError, match=r"^The file object given as the photo is closed: "):
        normalize_image(data)
    with open(path, "rb") as f:  # open, it reads
        assert normalize_image(f).image.size == (8, 8)


def test_nan_pixels_name_the_input_and_the_fix(tmp_path):
    pixels = np.zeros((8, 8, 3), np.float32)
    pixels[2, 3, 1] = np.nan
    with pytest.raises(ImageInputError) as info:
        normalize_image(pixels)
    assert str(info.value) == (
        "The numpy image (float32, shape (8, 8, 3)) has NaN or infinite pixel values, which cannot be shown as a "
        "photo. Replace them first (e.g. numpy.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=0.0)), or use the "
        "photo as an 8-bit JPEG or PNG.")
    assert normalize_image(np.nan_to_num(pixels, nan=0.0)).image.size == (8, 8)  # the fix it gives works
    path = tmp_path / "depth.tif"
    Image.fromarray(np.full((8, 8), np.inf, np.float32), "F").save(path)
    with pytest.raises(ImageInputError, match=rf"^'{path}' has NaN or infinite pixel values"):
        normalize_image(path)
