"""File fingerprints, atomic writes and the extension's own models folder."""
from __future__ import annotations

import os

import pytest

from conftest import ROOT
from wplus.assets import registry
from wplus.assets.atomic import atomic_path
from wplus.assets.fingerprint import cached_sha256, file_tag, sha256_file, stat_key


def test_default_models_dir_is_the_extensions_models_folder(monkeypatch):
    monkeypatch.delenv("WPLUS_MODELS_DIR", raising=False)
    assert registry.default_models_dir() == ROOT / "models"
    assert (registry.EXTENSION_DIR / "wplus" / "geometry.py").is_file()


def test_fingerprints_follow_the_file_version(tmp_path):
    path = tmp_path / "w.bin"
    assert file_tag(path) == "w.bin"  # not there yet
    path.write_bytes(b"one")
    os.utime(path, ns=(10, 10))
    tag, key, digest = file_tag(path), stat_key(path), cached_sha256(path)
    assert tag == "w.bin:3:10" and key == (str(path.resolve()), 3, 10) and digest == sha256_file(path)
    path.write_bytes(b"two")
    os.utime(path, ns=(20, 20))
    assert file_tag(path) != tag and stat_key(path) != key and cached_sha256(path) != digest


def test_atomic_write_replaces_in_one_step_or_not_at_all(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    with atomic_path(path) as tmp:
        tmp.write_text("new")
        assert not path.exists()
    assert path.read_text() == "new"
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert path.read_text() == "new" and sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_writes_get_the_mode_open_gives(tmp_path, umask, mode):
    """safetensors writes 0600 files; written through atomic_path they follow the umask like open()."""
    import torch
    from safetensors.torch import save_file

    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / "a.safetensors") as tmp:
            save_file({"x": torch.zeros(2)}, str(tmp))
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("plain")
            os.chmod(tmp, 0o600)
    finally:
        os.umask(old)
    assert (tmp_path / "a.safetensors").stat().st_mode & 0o777 == mode
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == mode
