"""The registry's knowledge of the paper's edit directions (listed before any file is downloaded)."""
from __future__ import annotations

import pytest

from conftest import OFFICIAL
from wplus.assets import registry
from wplus.stylegan.direction_names import assign_names
from wplus.stylegan.directions import DirectionLibrary, read_ganspace_configs

CSV = OFFICIAL / "w_direction" / "ganspace_configs.csv"


@pytest.mark.needs_shared
def test_registry_names_every_edit_of_the_paper_folder():
    from wplus.assets.download import sha256_file

    assert sha256_file(CSV) == registry.REGISTRY["directions/ganspace_configs.csv"].sha256
    assert registry.GANSPACE_EDITS == tuple(row[0] for row in read_ganspace_configs(CSV))
    official = registry.official_directions()
    names = {item: name for name, _, item in assign_names([(source, stem) for source, stem, _ in official])}
    lib = DirectionLibrary.from_folders(OFFICIAL / "w_direction")
    assert sorted(names.values()) == sorted(lib.names()) and len(names) == 65
    assert all(lib.get(f"{source}/{stem}").name == names[(source, stem)] for source, stem, _ in official)
    needed = {f.key for _, _, files in official for f in files}
    assert needed == {f.key for f in registry.direction_files()}  # every file serves some edit
