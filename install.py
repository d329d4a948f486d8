"""Installs what sd-webui-wplus needs and the WebUI's venv lacks. The WebUI runs this file at start-up
(Extensions tab install and every launch), so it must be idempotent and quick when all is there.

Only the offline face backend is missing from a stock WebUI (torch, numpy, Pillow, safetensors,
gradio, scipy, tqdm and facexlib ship with it). Pins match dev/requirements.txt; `--no-deps` keeps
pip from touching torch or anything else the WebUI pinned. A failure here never stops the WebUI:
the extension then uses facexlib and says so when dlib is asked for.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys

# (import name, pip requirement, what it is for)
REQUIREMENTS = (
    ("dlib", "dlib-bin==20.0.1.post1", "offline face detection + landmarks (the paper's FFHQ alignment)"),
    ("face_recognition_models", "face-recognition-models==0.3.0", "dlib's 68-point landmark model file"),
)


def _launch():
    try:
        import launch  # the WebUI's launcher module (present when the WebUI runs install.py)

        return launch
    except ImportError:
        return None


def is_installed(module: str) -> bool:
    launch = _launch()
    if launch is not None and hasattr(launch, "is_installed"):
        try:
            if launch.is_installed(module):
                return True
        except Exception:
            pass
    return importlib.util.find_spec(module) is not None


def pip_install(requirement: str, why: str) -> None:
    args = f"install --no-deps --prefer-binary {requirement}"
    launch = _launch()
    if launch is not None and hasattr(launch, "run_pip"):
        launch.run_pip(args, f"sd-webui-wplus requirement: {requirement} ({why})")
    else:
        subprocess.run([sys.executable, "-m", "pip", *args.split()], check=True)


def main() -> list[str]:
    """Install each missing requirement; returns the ones attempted."""
    attempted = []
    for module, requirement, why in REQUIREMENTS:
        if is_installed(module):
            continue
        attempted.append(requirement)
        try:
            pip_install(requirement, why)
        except Exception as e:  # keep the WebUI starting; the dlib backend just stays unavailable
            print(f"[sd-webui-wplus] could not install {requirement}: {e}. The dlib face backend is unavailable; "
                  f"the facexlib backend (Settings > W+ Adapter > Face detection backend) still works.")
    return attempted


if __name__ == "__main__":  # the WebUI runs `python install.py` with its venv's python
    main()
