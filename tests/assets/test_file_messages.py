"""Messages about weight files say what to do: torch's own boilerplate never leaks into them, a damaged
file names its next step (download a known file again, remake an identity, use another copy), and an
e4e path that is empty or goes through a file is not answered with "put it in the folder <a file>"."""
from __future__ import annotations

import zipfile

import pytest
import torch

from wplus.assets import registry
from wplus.assets.io import _torch_text
from wplus.errors import AdapterFormatError, E4EFormatError, IdentityFormatError, MissingWeightsError
from wplus.identity import load_identity
from wplus.stylegan.e4e import load_e4e


def _without_version_record(tmp_path):
    """A torch zip archive whose CRCs are fine but that lacks its `version` record (torch's TORCH_CHECK)."""
    src = tmp_path / "src.pth"
    torch.save(torch.randn(1, 18, 512), src)
    out = tmp_path / "7.pth"
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as new:
        for info in old.infolist():
            if not info.filename.endswith("/version"):
                new.writestr(info.filename, old.read(info.filename))
    return out


def test_torch_boilerplate_does_not_leak(tmp_path):
    with pytest.raises(IdentityFormatError) as info:
        load_identity(_without_version_record(tmp_path))
    text = str(info.value)
    assert "Could this error message be improved" not in text and "enhancement request" not in text
    assert text == (f"{tmp_path / '7.pth'} is not a readable identity file (corrupt or incomplete download, or "
                    "another format: RuntimeError: Expected hasRecord(\"version\") to be true, but got false). "
                    "Download or save it again.")


def test_torch_text_cleanup():
    assert _torch_text('Expected x to be true, but got false.  (Could this error message be improved?  If so, '
                       'please report an enhancement request to PyTorch.)\nmore') == \
        "Expected x to be true, but got false"
    assert _torch_text("[enforce fail at inline_container.cc:230] . Attempted to read version 99") == \
        "Attempted to read version 99"
    assert _torch_text("PytorchStreamReader failed locating file data.pkl: file not found. This is an internal "
                       "miniz error. If you are seeing this error ...") == \
        "PytorchStreamReader failed locating file data.pkl: file not found"
    long = _torch_text("word " * 100)
    assert len(long) <= 202 and long.endswith("word …")


def test_a_damaged_known_file_says_where_to_download_it_again(tmp_path):
    from helpers.malformed import tiny_e4e_checkpoint

    ckpt = tiny_e4e_checkpoint()
    ckpt["latent_avg"][0, 0] = float("nan")
    path = tmp_path / "e4e_ffhq_encode.pt"
    torch.save(ckpt, path)
    with pytest.raises(E4EFormatError) as info:
        load_e4e(path)
    entry = registry.get("e4e")
    assert str(info.value).endswith("holds NaN or infinite values; the file is damaged (or came from a diverged "
                                    f"training run). Delete it and download 'e4e_ffhq_encode.pt' again from "
                                    f"{entry.url}.")


def test_a_damaged_identity_says_to_make_it_again(tmp_path):
    path = tmp_path / "7.pth"
    torch.save(torch.randn(1, 18, 512).index_fill(1, torch.tensor([2]), float("inf")), path)
    with pytest.raises(IdentityFormatError, match=r"NaN or infinite values; .* Make the identity again from its "
                                                  r"photo: `python -m wplus invert PHOTO -o NAME`\."):
        load_identity(path)


def test_a_damaged_adapter_of_unknown_origin_says_use_another_copy(tmp_path):
    from helpers.malformed import ADAPTER_CASES

    make, _ = ADAPTER_CASES["nan_weight_bin"]
    import wplus
    with pytest.raises(AdapterFormatError, match=r"NaN or infinite values; .*Use an undamaged copy: download it "
                                                 r"again from where it came from, or export it again"):
        wplus.load_adapter(make(tmp_path))


def test_an_empty_e4e_path_points_to_the_models_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("WPLUS_MODELS_DIR", str(tmp_path / "models"))
    for empty in ("", "   "):
        with pytest.raises(MissingWeightsError) as info:
            load_e4e(empty)
        assert str(info.value) == registry.missing_message(
            registry.get("e4e"), None, "the e4e path given is empty (leave it unset to use the models folder)")
        assert f"put it in the folder {tmp_path / 'models'}/ " in str(info.value)
    assert not (tmp_path / "models").exists()


def test_an_e4e_path_through_a_file_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("WPLUS_MODELS_DIR", str(tmp_path / "models"))
    (tmp_path / "somefile.txt").write_text("x")
    for rel in ("somefile.txt/e4e.pt", "somefile.txt/a/b/e4e.pt"):
        with pytest.raises(MissingWeightsError) as info:
            load_e4e(tmp_path / rel)
        text = str(info.value)
        assert (f"The path {tmp_path / rel} cannot exist: {tmp_path / 'somefile.txt'} is a file, not a folder; "
                "check the path.") in text
        assert f"put it in the folder {tmp_path / 'models'}/ (the file must be " in text
        assert "folder " + str(tmp_path / "somefile.txt") not in text
    with pytest.raises(MissingWeightsError, match=r"put it in the folder .*/nowhere/ \(the file must be"):
        load_e4e(tmp_path / "nowhere" / "e4e.pt")  # a plain missing folder: put it there, as before
