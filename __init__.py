"""ComfyUI entry point: this checkout in ComfyUI/custom_nodes/ is the W+ node pack.

ComfyUI imports this file under a name made from its path, without the checkout on sys.path, so
the core package `wplus` beside it is made importable here (only it: the checkout's other folders
stay off sys.path). Nothing heavy happens at import: no model, no dlib, no download; the nodes
load what they need when they run. The A1111/Forge extension (scripts/) and the pip package never
import this file.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_CORE = Path(__file__).resolve().parent / "wplus"


def _import_core() -> None:
    """Make `import wplus` find the package of this checkout (unless one is already imported)."""
    if "wplus" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location("wplus", _CORE / "__init__.py",
                                                  submodule_search_locations=[str(_CORE)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["wplus"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["wplus"]
        raise


def _in_comfyui() -> bool:
    """ComfyUI has put its folder_paths on sys.path. Other importers of this file (pytest collecting
    the checkout as a package) get no nodes and change nothing."""
    return importlib.util.find_spec("folder_paths") is not None


NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
if _in_comfyui():
    _import_core()
    from wplus.comfy.files import register as _register
    from wplus.comfy.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: F811

    _register()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
