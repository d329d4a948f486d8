"""X/Y/Z plot axes for W+: one per option with an axis label in the schema (λ, start %, identity,
adapter, ADetailer's face-pass λ and identity per face) and one per edit direction.

The WebUI's xyz_grid keeps its axes in a module-level list; extensions append theirs before the
UI is built (on_before_ui, which also runs in API-only mode). Axis values are stored on the copy
of `p` that xyz_grid makes for each cell (a fresh dict per cell: `copy(p)` is shallow) and the
W+ script applies them in `process`. Values are checked by the options' own validation.
"""
from __future__ import annotations

from modules import script_callbacks, scripts, shared

from wplus.errors import WPlusError
from wplus.webui import catalog, passes
from wplus.webui.options import OPTIONS, XYZ_ATTR, Option, edit_option
from wplus.webui.settings import ExtensionSettings

PREFIX = "[W+] "
AXIS_TYPES = {"float": float, "int": int, "text": str}


def _settings() -> ExtensionSettings:
    return ExtensionSettings.from_opts(shared.opts)


def find_xyz_module():
    for data in scripts.scripts_data:
        if getattr(data.script_class, "__module__", "") in ("xyz_grid.py", "scripts.xyz_grid") and data.module:
            return data.module
    return None


def _setter(key: str):
    def apply(p, x, xs):
        setattr(p, XYZ_ATTR, {**(getattr(p, XYZ_ATTR, None) or {}), key: x})

    return apply


def _confirm(option: Option):
    """xyz_grid shows a RuntimeError's message before it runs a cell: the option's own error."""
    def confirm(p, xs):
        for x in xs:
            try:
                option.check(x)
            except WPlusError as e:
                raise RuntimeError(f"{PREFIX}{option.xyz_label}: {e}") from e
        if option.name == "identity":
            _confirm_identity(xs)
        if option.name == "ad_identities":
            _confirm_face_lists(xs)

    return confirm


def _confirm_identity(xs) -> None:
    known = set(catalog.list_identities(_settings().models_dir))
    missing = [x for x in xs if x not in known]
    if missing:
        raise RuntimeError(f"{PREFIX}Identity: no saved identity called {', '.join(map(repr, missing))} "
                           "(save one from the W+ panel first)")


def _confirm_face_lists(xs) -> None:
    """Cells like "alice|bob" (X/Y/Z splits its values at commas): every name must be saved."""
    known = set(catalog.list_identities(_settings().models_dir)) | {passes.PANEL_IDENTITY, passes.NO_IDENTITY}
    missing = sorted({n for x in xs for n in passes.parse_identity_list(x) if n not in known})
    if missing:
        raise RuntimeError(f"{PREFIX}Identity per face: no saved identity called {', '.join(map(repr, missing))} "
                           "(write a cell as alice|bob)")


def _choices(name: str):
    if name == "identity":
        return lambda: catalog.list_identities(_settings().models_dir)
    if name == "adapter":
        return lambda: catalog.list_adapters(_settings().adapter_dirs())
    return None


def axis_options(xyz) -> list:
    opts = []
    for option in OPTIONS:
        if option.xyz_label:
            opts.append(xyz.AxisOption(PREFIX + option.xyz_label, AXIS_TYPES[option.kind], _setter(option.name),
                                       confirm=_confirm(option), choices=_choices(option.name)))
    for info in catalog.direction_catalog(_settings().models_dir):
        option = edit_option(info.name, info.minimum, info.maximum, label=info.axis_label)
        opts.append(xyz.AxisOption(PREFIX + option.xyz_label, float, _setter(option.name), confirm=_confirm(option)))
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
