"""The request's fields are the schema's options, in the schema's (the WebUI's positional) order."""
from __future__ import annotations

from wplus.generation.options import FIXED_FIELDS, OPTION, OPTIONS
from wplus.generation.request import Request, field_names


def test_fields_follow_the_schema():
    assert field_names() == FIXED_FIELDS + ("edits",)
    defaults = Request()
    assert all(getattr(defaults, o.name) == o.default for o in OPTIONS)
    assert defaults.edits == {} and Request().edits is not defaults.edits


def test_derived_values():
    r = Request(mix_mode=OPTION["mix_mode"].choices[1], mix_coarse=0.1, mix_middle=0.2, mix_fine=0.3,
                edits={"smile": 0.0, "age": 2}, scale=0.7)
    assert r.mix_weights() == (0.1, 0.2, 0.3) and r.active_edits() == {"age": 2.0}
    assert r.face_pass_scale() == 0.7 and Request(ad_scale=0.4).face_pass_scale() == 0.4
