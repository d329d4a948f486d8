"""Pasting an infotext into the WebUI ("Send to txt2img", PNG Info, the paste button) restores the
panel: one (component, callable) pair per panel field, the values parsed once per paste and checked
like every other entry point's."""
from __future__ import annotations

import logging

from wplus.errors import WPlusError
from wplus.webui import infotext
from wplus.webui.options import FIXED_FIELDS, MixMode, Source
from wplus.webui.panel import Panel

log = logging.getLogger("wplus")
PHOTO_FIELDS = ("reference", "reference2", "more_references")  # a photo cannot be restored from text


UNCHANGED = object()  # the pasted W+ parameters hold a bad value: leave the panel as it is


class PastedValues:
    """The panel values of the infotext being pasted: one parse per paste, not one per field."""

    def __init__(self, panel: Panel) -> None:
        self.panel = panel
        self.limits = {name: (s.minimum, s.maximum) for name, s in panel.edit_sliders.items()}
        self._last: list = [None, None]  # (params dict, panel values)

    def restored(self, params: dict):
        """Panel values, None (no W+ parameters: W+ off) or UNCHANGED (a bad value)."""
        if self._last[0] is not params:  # identity, not id(): the dict is kept alive, so no id reuse
            try:
                args = infotext.panel_from_params(params, self.panel.direction_names, self.limits)
            except WPlusError as e:  # a value outside its option's limits: the panel stays as it is
                log.warning(f"{e} (the pasted W+ parameters were not applied)")
                args = UNCHANGED
            self._last[:] = [params, args]
        return self._last[1]

    def field(self, name: str):
        def get(params: dict):
            import gradio as gr

            args = self.restored(params)
            if args is UNCHANGED or (args is None and name != "enabled") or name in PHOTO_FIELDS:
                return gr.update()
            if name == "enabled":
                return gr.update(value=args is not None)
            value = getattr(args, name)
            return gr.update(value=str(value) if isinstance(value, (Source, MixMode)) else value)

        return get

    def edit(self, direction: str):
        def get(params: dict):
            import gradio as gr

            args = self.restored(params)
            if args is None or args is UNCHANGED:
                return gr.update()
            return gr.update(value=float(args.edits.get(direction, 0.0)))

        return get


def paste_fields(panel: Panel) -> list:
    """(component, callable) pairs: pasting an infotext restores the panel (or turns W+ off when
    the infotext has no W+ parameters)."""
    pasted = PastedValues(panel)
    fields = [(panel.by_field[name], pasted.field(name)) for name in FIXED_FIELDS if name not in PHOTO_FIELDS]
    fields += [(slider, pasted.edit(name)) for name, slider in panel.edit_sliders.items()]
    return fields
