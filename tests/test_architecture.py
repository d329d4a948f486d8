"""The package layout README's Architecture section describes: who may import whom."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

COMMON = {"wplus.errors", "wplus.geometry", "wplus.lazy"}
ALLOWED = {  # package -> the other wplus packages it may import (besides COMMON)
    "wplus.errors": set(),
    "wplus.geometry": set(),
    "wplus.assets": set(),
    "wplus.branch": {"wplus.assets"},
    "wplus.faces": {"wplus.assets"},
    "wplus.stylegan": {"wplus.assets"},
    "wplus.identity": {"wplus.assets", "wplus.faces", "wplus.stylegan"},
    "wplus.webui": {"wplus.assets", "wplus.branch", "wplus.faces", "wplus.stylegan", "wplus.identity"},
    "wplus.pipeline": {"wplus.assets", "wplus.branch", "wplus.faces", "wplus.stylegan", "wplus.identity",
                       "wplus.webui"},
    # the ComfyUI nodes: the generation layer and the floors below it, the identity score
    # (wplus.pipeline.score); never the WebUI's panel/session
    "wplus.comfy": {"wplus.assets", "wplus.branch", "wplus.faces", "wplus.stylegan", "wplus.identity",
                    "wplus.generation", "wplus.pipeline"},
    "wplus.__main__": {"wplus.assets", "wplus.identity", "wplus.stylegan", "wplus.pipeline"},
    "wplus.convert": {"wplus.branch"},
    "wplus.e4e": {"wplus.stylegan"},
    "wplus.__init__": set(),
}

# The one use of the trainer from wplus/: `generate --model FILE.safetensors` converts a single-file
# checkpoint with the trainer's offline loader (installed with the package).
TRAINER_OK = {"wplus.pipeline": {"trainer.models"}}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.update([f"{node.module}.{a.name}" for a in node.names] if node.module == "wplus" else [node.module])
    return out


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_wplus_packages_import_only_what_the_architecture_allows():
    wrong = []
    for path in sorted((ROOT / "wplus").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        me = _package(".".join(rel.parts))
        for module in _imports(path):
            top = module.split(".")[0]
            if module in TRAINER_OK.get(me, ()):
                continue
            if top in ("modules", "scripts", "trainer") or (top == "gradio" and me != "wplus.webui") or (
                    top in ("comfy", "folder_paths") and me != "wplus.comfy"):
                wrong.append(f"{rel}: {module}")
            elif top == "wplus" and _package(module) not in ALLOWED[me] | COMMON | {me}:
                wrong.append(f"{rel}: {module}")
    assert not wrong, "imports across the layout: " + ", ".join(wrong)


def test_the_trainer_does_not_import_the_webui_glue():
    wrong = [f"{p.name}: {m}" for p in sorted((ROOT / "trainer").glob("*.py")) for m in _imports(p)
             if m.split(".")[0] in ("modules", "gradio") or m.startswith("wplus.webui")]
    assert not wrong


def test_only_wplus_comfy_meets_comfyui_and_never_the_webui_session():
    """ComfyUI's modules stay in wplus/comfy; wplus/comfy reaches the identity score, not the rest of the pipeline."""
    comfy = [m for p in sorted((ROOT / "wplus" / "comfy").rglob("*.py")) for m in _imports(p)]
    assert not [m for m in comfy if m.startswith(("wplus.webui", "wplus.pipeline")) and m != "wplus.pipeline.score"]
