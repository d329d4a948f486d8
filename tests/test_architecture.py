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
    "wplus.cli": {"wplus.assets", "wplus.faces", "wplus.identity", "wplus.stylegan", "wplus.generation",
                  "wplus.pipeline"},
    "wplus.__main__": {"wplus.cli"},
    "wplus.convert": {"wplus.branch"},
    "wplus.e4e": {"wplus.stylegan"},
    "wplus.__init__": set(),
}

HOSTS = ("modules", "scripts", "trainer", "comfy", "folder_paths", "comfy_extras", "nodes")  # never from wplus/
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
            if top in HOSTS or (top == "gradio" and me != "wplus.webui"):
                wrong.append(f"{rel}: {module}")
            elif top == "wplus" and _package(module) not in ALLOWED[me] | COMMON | {me}:
                wrong.append(f"{rel}: {module}")
    assert not wrong, "imports across the layout: " + ", ".join(wrong)


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
