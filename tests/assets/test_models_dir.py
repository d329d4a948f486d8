"""Where model files go: $WPLUS_MODELS_DIR, else a WebUI extension checkout's models/, else a per-user
data folder (a pip install never writes into site-packages); nothing is created before a file is
written, and a failed download or write leaves no empty folder behind."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

from conftest import ROOT
from wplus.assets import registry
from wplus.assets.atomic import atomic_path
from wplus.assets.download import download
from wplus.errors import MissingWeightsError


def _no_env(monkeypatch, home: Path) -> None:
    monkeypatch.delenv("WPLUS_MODELS_DIR", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(home))


def _site_packages(tmp_path: Path) -> Path:
    """A copy of the package as pip lays it out: wplus/ in site-packages, no install.py or scripts/."""
    site = tmp_path / "site-packages"
    shutil.copytree(ROOT / "wplus", site / "wplus", ignore=shutil.ignore_patterns("__pycache__"))
    return site


def test_the_environment_variable_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("WPLUS_MODELS_DIR", str(tmp_path / "mine"))
    assert registry.default_models_dir() == tmp_path / "mine"
    monkeypatch.setenv("WPLUS_MODELS_DIR", "~/models")
    assert registry.default_models_dir() == Path.home() / "models"


def test_a_checkout_keeps_its_models_folder(monkeypatch, tmp_path):
    _no_env(monkeypatch, tmp_path / "home")
    assert registry.is_extension_checkout(ROOT)
    assert registry.default_models_dir() == ROOT / "models"


def test_a_pip_install_uses_the_per_user_folder(monkeypatch, tmp_path):
    site = _site_packages(tmp_path)
    _no_env(monkeypatch, tmp_path / "home")
    monkeypatch.setattr(registry, "EXTENSION_DIR", site)
    assert not registry.is_extension_checkout(site)
    assert registry.default_models_dir() == tmp_path / "home" / ".local" / "share" / "wplus" / "models"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert registry.default_models_dir() == tmp_path / "xdg" / "wplus" / "models"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")  # XDG: a relative path is ignored
    assert registry.default_models_dir() == tmp_path / "home" / ".local" / "share" / "wplus" / "models"
    # one marker alone (a stray install.py in site-packages) is not a checkout
    (site / "install.py").write_text("")
    assert registry.default_models_dir() == tmp_path / "home" / ".local" / "share" / "wplus" / "models"
    (site / "scripts").mkdir()
    (site / "scripts" / "wplus_script.py").write_text("")
    assert registry.default_models_dir() == site / "models"
    assert not (tmp_path / "home").exists()  # asking created nothing


def test_the_per_user_folder_on_macos_and_windows(monkeypatch, tmp_path):
    _no_env(monkeypatch, tmp_path / "home")
    monkeypatch.setattr(registry, "_system", lambda: "macos")
    assert registry.user_models_dir() == tmp_path / "home" / "Library" / "Application Support" / "wplus" / "models"
    monkeypatch.setattr(registry, "_system", lambda: "windows")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert registry.user_models_dir() == tmp_path / "local" / "wplus" / "models"
    monkeypatch.delenv("LOCALAPPDATA")
    assert registry.user_models_dir() == tmp_path / "home" / "AppData" / "Local" / "wplus" / "models"


_PROBE = """
import json, sys, urllib.error
from wplus.assets import registry
from wplus.assets.download import ensure_file
from wplus.errors import MissingWeightsError
def offline(request, timeout=None):
    raise urllib.error.URLError("no network")
try:
    ensure_file(registry.get("adapter"), opener=offline, progress=False)
    failed = ""
except MissingWeightsError as exc:
    failed = str(exc)
print(json.dumps({"default": str(registry.default_models_dir()), "module": registry.__file__, "failed": failed}))
"""


def test_pip_layout_end_to_end_failed_download_leaves_nothing(tmp_path):
    """The real package copied to a site-packages folder, run in a fresh interpreter: models go to the
    per-user folder, and a download that fails (offline) leaves no folder there."""
    site = _site_packages(tmp_path)
    home = tmp_path / "home"
    env = {"HOME": str(home), "PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "WPLUS_OFFLINE": ""}
    r = subprocess.run([sys.executable, "-c", _PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    user = home / ".local" / "share" / "wplus" / "models"
    assert Path(out["module"]).is_relative_to(site) and Path(out["default"]) == user
    assert "the download failed (no network)" in out["failed"] and f"put it in the folder {user}" in out["failed"]
    assert not home.exists() and sorted(p.name for p in site.iterdir()) == ["wplus"]


def test_failed_download_removes_the_folders_it_created(tmp_path):
    entry = registry.get("directions/latent_directions/age.npy")

    def offline(request, timeout=None):
        raise urllib.error.URLError("no network")

    with pytest.raises(MissingWeightsError, match=r"the download failed \(no network\)"):
        download(entry, tmp_path / "models", progress=False, opener=offline)
    assert list(tmp_path.iterdir()) == []


def test_failed_atomic_write_removes_the_folders_it_created(tmp_path):
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "kept" / "a" / "b" / "x.safetensors") as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert [p.name for p in tmp_path.iterdir()] == ["kept"] and list((tmp_path / "kept").iterdir()) == []
    with atomic_path(tmp_path / "kept" / "a" / "x.txt") as tmp:
        tmp.write_text("whole")
    assert (tmp_path / "kept" / "a" / "x.txt").read_text() == "whole"
