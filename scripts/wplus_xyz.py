"""X/Y/Z plot axes for W+: λ, start %, identity, adapter and one per edit direction.

The WebUI's xyz_grid keeps its axes in a module-level list; extensions append theirs before the
UI is built (on_before_ui, which also runs in API-only mode). Axis values are stored on the copy
of `p` that xyz_grid makes for each cell (a fresh dict per cell: `copy(p)` is shallow) and the
W+ script applies them in `process`.
"""
from __future__ import annotations

from pathlib import Path

from modules import script_callbacks, scripts, shared

from wplus.webui import catalog
from wplus.webui.options import SCALE_LIMIT, XYZ_ATTR
from wplus.webui.settings import ExtensionSettings

PREFIX = "[W+] "
EXT_MODELS = Path(__file__).resolve().parents[1] / "models"


def _settings() -> ExtensionSettings:
    return ExtensionSettings.from_getter(lambda key, default: getattr(shared.opts, key, default), EXT_MODELS)


def find_xyz_module():
    for data in scripts.scripts_data:
        if getattr(data.script_class, "__module__", "") in ("xyz_grid.py", "scripts.xyz_grid") and data.module:
            return data.module
    return None


def _setter(key: str):
    def apply(p, x, xs):
        setattr(p, XYZ_ATTR, {**(getattr(p, XYZ_ATTR, None) or {}), key: x})

    return apply


def _confirm_range(lo: float, hi: float, label: str):
    def confirm(p, xs):
        for x in xs:
            if not lo <= float(x) <= hi:
                raise RuntimeError(f"{PREFIX}{label}: {x} is outside {lo:g}..{hi:g}")

    return confirm


def _confirm_identity(p, xs):
    known = set(catalog.list_identities(_settings().models_dir))
    missing = [x for x in xs if x not in known]
    if missing:
        raise RuntimeError(f"{PREFIX}Identity: no saved identity called {', '.join(map(repr, missing))} "
                           "(save one from the W+ panel first)")


def axis_options(xyz) -> list:
    settings = _settings()
    adapter_dirs = catalog.adapter_dirs(settings.models_dir, [EXT_MODELS])
    opts = [
        xyz.AxisOption(f"{PREFIX}Identity strength (λ)", float, _setter("scale"),
                       confirm=_confirm_range(0.0, SCALE_LIMIT, "Identity strength")),
        xyz.AxisOption(f"{PREFIX}Start at step (%)", float, _setter("start"),
                       confirm=_confirm_range(0.0, 100.0, "Start at step (%)")),
        xyz.AxisOption(f"{PREFIX}Identity", str, _setter("identity"), confirm=_confirm_identity,
                       choices=lambda: catalog.list_identities(_settings().models_dir)),
        xyz.AxisOption(f"{PREFIX}Adapter", str, _setter("adapter"),
                       choices=lambda: catalog.list_adapters(adapter_dirs)),
    ]
    for info in catalog.direction_catalog(settings.models_dir):
        opts.append(xyz.AxisOption(f"{PREFIX}Edit {info.label}", float, _setter(f"edit:{info.name}")))
    return opts


def add_axes() -> int:
    """Append the W+ axes once; returns how many were added (0 when xyz_grid is absent)."""
    xyz = find_xyz_module()
    if xyz is None:
        return 0
    present = {getattr(o, "label", None) for o in xyz.axis_options}
    new = [o for o in axis_options(xyz) if o.label not in present]
    xyz.axis_options.extend(new)
    return len(new)


# With --nowebui the API builds xyz_grid's UI (which copies its axis list) before on_before_ui runs;
# the WebUI loads its built-in scripts, xyz_grid among them, before extensions, so add them now too.
add_axes()
script_callbacks.on_before_ui(add_axes)
