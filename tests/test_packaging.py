"""pyproject.toml: the wheel holds wplus (all subpackages) and the trainer with its configs, and the
`wplus` console script points at the command line."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version

import pytest

from conftest import ROOT


def test_wheel_has_the_packages_configs_and_console_script(tmp_path):
    if int(version("setuptools").split(".")[0]) < 77:
        pytest.skip("building offline needs setuptools >= 77 (dev/requirements.txt) in this environment")
    text = (ROOT / "pyproject.toml").read_text()
    assert "[project.scripts]" in text and "[tool.ruff]" in text  # package metadata beside the lint config
    src = tmp_path / "src"  # a copy: setuptools builds in the source tree
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("wplus", "trainer"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(src)], check=True, cwd=tmp_path, capture_output=True)
    (wheel,) = tmp_path.glob("sd_webui_wplus-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("wplus/__main__.py", "wplus/cli/generate.py", "wplus/branch/hook.py", "wplus/webui/infotext.py",
                     "wplus/generation/schedule.py", "wplus/assets/checkpoint.py",
                     "wplus/assets/model_configs/sd1.yaml", "wplus/assets/model_configs/sdxl.yaml",
                     "trainer/configs/stage1.yaml"):
        assert required in names, required
    assert not any(n.startswith(("tests/", "scripts/", "bench/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "wplus = wplus.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
