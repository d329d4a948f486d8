"""Identity names and paths: entry points that take names only (WebUI, API, nodes) refuse anything that
is no name without saying whether a path exists; paths (CLI, Python) are read only when they are
identity files; an identity with an empty thumbnail loads the same on every Pillow."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import wplus
from wplus.errors import IdentityFormatError, IdentityNotFoundError, WPlusError
from wplus.identity import MAX_NAME, Identity, check_identity_name, load_identity, save_identity


@pytest.fixture()
def folder(tmp_path):
    folder = tmp_path / "identities"
    save_identity(Identity(torch.randn(18, 512, generator=torch.Generator().manual_seed(0))), "alice", folder=folder)
    return folder


@pytest.fixture()
def outside(tmp_path):
    """A valid identity file outside the identities folder (what an API request must not reach)."""
    return save_identity(Identity(torch.randn(18, 512)), path=tmp_path / "elsewhere" / "x.safetensors")


@pytest.mark.parametrize("name, why", [
    ("", "it is empty"),
    ("   ", "it is empty"),
    ("x" * (MAX_NAME + 1), f"it is longer than {MAX_NAME} characters"),
    ("al\0ice", "it contains a NUL character"),
    ("../alice", "it is a path"),
    ("..\\alice", "it is a path"),
    ("sub/alice", "it is a path"),
    ("/etc/passwd", "it is a path"),
    ("C:alice", "it is a path"),
    ("..", "it names a folder"),
    (".", "it names a folder"),
])
def test_names_only_refuses_what_is_no_name(folder, name, why):
    with pytest.raises(IdentityNotFoundError) as info:
        load_identity(name, folder=folder, allow_paths=False)
    text = str(info.value)
    assert f"is not an identity name ({why}" in text and "paths are not accepted" in text
    assert str(folder) not in text


def test_names_only_never_tells_whether_a_path_exists(folder, outside, tmp_path):
    messages = []
    for path in (outside, tmp_path / "elsewhere" / "y.safetensors"):  # names of the same length
        with pytest.raises(IdentityNotFoundError) as info:
            load_identity(str(path), folder=folder, allow_paths=False)
        messages.append(str(info.value).replace(path.name, "NAME"))
    assert messages[0] == messages[1]  # the same answer for a file that exists and one that does not
    assert load_identity(outside).wplus.shape == (18, 512)  # paths still work for CLI / Python callers


def test_names_only_loads_names(folder):
    assert check_identity_name("alice") == "alice"
    assert load_identity("alice", folder=folder, allow_paths=False).name == "alice"
    with pytest.raises(IdentityNotFoundError, match=r"No identity called 'bob' in .*Saved identities: alice"):
        load_identity("bob", folder=folder, allow_paths=False)
    with pytest.raises(WPlusError, match="must be a string, not a int"):
        check_identity_name(7)


def test_a_file_of_another_kind_is_not_an_identity(tmp_path, folder):
    other = tmp_path / "x.bin"
    other.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(IdentityFormatError) as info:
        load_identity(str(other), folder=folder)
    assert str(info.value) == (f"{other} is not an identity file: identities are .safetensors files written by "
                               "`wplus invert` (or the paper's .pth W+ codes). Make one from a photo with "
                               "`python -m wplus invert PHOTO -o NAME`.")
    with pytest.raises(IdentityNotFoundError, match=r"^identity file not found: /no/such/x\.safetensors\.$"):
        load_identity("/no/such/x.safetensors", folder=folder)  # a path, not "No identity called ... -o no_such_x"


def test_a_name_in_the_folder_wins_over_a_file_of_that_name_here(tmp_path, folder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "alice").write_text("a note, not an identity")
    assert load_identity("alice", folder=folder).name == "alice"


def test_an_empty_thumbnail_loads_as_none(tmp_path):
    code = torch.randn(18, 512, generator=torch.Generator().manual_seed(4))
    path = tmp_path / "empty_thumb.safetensors"
    for shape in ((0, 0, 3), (0, 256, 3), (256, 0, 3)):
        save_file({"wplus": code, "thumbnail": torch.zeros(shape, dtype=torch.uint8)}, str(path),
                  metadata={"format": "wplus-identity", "version": "1", "name": "empty"})
        ident = wplus.load_identity(path)
        assert ident.thumbnail is None and torch.equal(ident.wplus, code) and ident.name == "empty"
    # a real thumbnail still loads
    thumb = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    save_identity(Identity(code, thumbnail=Image.fromarray(thumb)), path=path)
    assert np.array_equal(np.asarray(load_identity(path).thumbnail), thumb)
