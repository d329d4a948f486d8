"""The package layout docs/architecture.md describes (README links it): who may import whom."""
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
    "wplus.generation": {"wplus.assets", "wplus.branch", "wplus.faces", "wplus.stylegan", "wplus.identity"},
    "wplus.webui": {"wplus.assets", "wplus.branch", "wplus.faces", "wplus.stylegan", "wplus.identity",
                    "wplus.generation"},
    "wplus.pipeline": {"wplus.assets", "wplus.branch", "wplus.faces", "wplus.stylegan", "wplus.identity",
                       "wplus.generation"},
    # the ComfyUI nodes: the generation layer and the floors below it, and the identity score
    # (wplus.pipeline.score); never the WebUI room
    "wplus.comfy": {"wplus.assets", "wplus.branch", "wplus.faces", "wplus.stylegan", "wplus.identity",
                    "wplus.generation", "wplus.pipeline"},
    "wplus.cli": {"wplus.assets", "wplus.faces", "wplus.identity", "wplus.stylegan", "wplus.generation",
                  "wplus.pipeline"},
    "wplus.__main__": {"wplus.cli"},
    "wplus.convert": {"wplus.branch"},
    "wplus.e4e": {"wplus.stylegan"},
    "wplus.__init__": set(),
}

HOSTS = ("modules", "scripts", "trainer", "comfy", "folder_paths", "comfy_extras", "nodes")  # never from wplus/
COMFYUI = ("comfy", "folder_paths")  # ComfyUI's own modules: only wplus/comfy, inside functions
MAX_FUNCTION_LINES = 60


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
            if (top in HOSTS and not (me == "wplus.comfy" and top in COMFYUI)) or (
                    top == "gradio" and me != "wplus.webui"):
                wrong.append(f"{rel}: {module}")
            elif top == "wplus" and _package(module) not in ALLOWED[me] | COMMON | {me}:
                wrong.append(f"{rel}: {module}")
    assert not wrong, "imports across the layout: " + ", ".join(wrong)


def test_wplus_comfy_meets_comfyui_only_inside_functions_and_reaches_only_the_score_of_the_pipeline():
    wrong = []
    for path in sorted((ROOT / "wplus" / "comfy").rglob("*.py")):
        tree = ast.parse(path.read_text())
        top_level = {n.module if isinstance(n, ast.ImportFrom) else a.name for n in tree.body
                     if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        wrong += [f"{path.name}: {m} at import time" for m in top_level if m and m.split(".")[0] in COMFYUI]
        wrong += [f"{path.name}: {m}" for m in _imports(path)
                  if m.startswith("wplus.pipeline") and m != "wplus.pipeline.score"]
    assert not wrong, ", ".join(wrong)


def test_the_trainer_does_not_import_the_webui_glue():
    wrong = [f"{p.name}: {m}" for p in sorted((ROOT / "trainer").glob("*.py")) for m in _imports(p)
             if m.split(".")[0] in ("modules", "gradio") or m.startswith("wplus.webui")]
    assert not wrong


def test_only_the_webui_room_imports_the_webui():
    wrong = [f"{p.relative_to(ROOT)}: {m}" for p in sorted((ROOT / "wplus").rglob("*.py"))
             if "webui" not in p.relative_to(ROOT).parts for m in _imports(p) if m.startswith("wplus.webui")]
    assert not wrong


def test_functions_are_short():
    """No function over MAX_FUNCTION_LINES lines in wplus/, scripts/ and trainer/ (ruff's C901 keeps
    their complexity at 10 or less)."""
    long = []
    for folder in ("wplus", "scripts", "trainer"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, ", ".join(long)
