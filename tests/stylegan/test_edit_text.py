"""One text form for edits: written by the CLI, the panel's Save identity and the infotext alike."""
from __future__ import annotations

import pytest

from wplus.errors import DirectionError
from wplus.stylegan.edit_text import format_edits, parse_edits
from wplus.webui import infotext


def test_one_writer_and_both_separators_read():
    edits = {"smile": 2.0, "latent/age": -1.5, "glasses": 0.0}
    text = format_edits(edits)
    assert text == "smile=2; latent/age=-1.5"  # strength 0 is no edit
    assert infotext.format_edits is format_edits
    for written in (text, "smile=2, latent/age=-1.5", "smile=2,latent/age=-1.5;"):  # older CLI files used ','
        assert parse_edits(written) == {"smile": 2.0, "latent/age": -1.5}
        assert infotext.parse_edits(written) == {"smile": 2.0, "latent/age": -1.5}
    assert parse_edits(["smile=2", "age=-1"]) == {"smile": 2.0, "age": -1.0}  # repeated --edit


@pytest.mark.parametrize("bad", ["smile", "smile=", "=2", "smile=big"])
def test_bad_edits_raise_for_the_cli_and_are_skipped_when_pasted(bad):
    with pytest.raises(DirectionError, match="NAME=STRENGTH"):
        parse_edits(f"age=1; {bad}")
    assert infotext.parse_edits(f"age=1; {bad}") == {"age": 1.0}
