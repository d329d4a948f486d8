"""Lazy public names for a package: `import wplus` stays cheap, torch/diffusers load when a name is used."""
from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Callable, Mapping


def lazy_getattr(package: str, exports: Mapping[str, str], namespace: dict) -> Callable[[str], Any]:
    """A module `__getattr__`: an exported name is imported from its module (and kept in `namespace`);
    any other name is looked up as a submodule (`wplus.branch`, `wplus.pipeline.load`, …)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            if importlib.util.find_spec(f"{package}.{name}") is None:
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
            return importlib.import_module(f"{package}.{name}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
