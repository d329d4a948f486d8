"""Settings > W+ Adapter: built from `wplus.webui.settings.SPECS`."""
from __future__ import annotations

import gradio as gr
from modules import script_callbacks, shared

from wplus.webui.settings import SECTION, SPECS


def _component(spec):
    if spec.kind == "radio":
        return gr.Radio, {"choices": list(spec.choices)}
    if spec.kind == "number":
        return gr.Number, {"precision": 0, "minimum": spec.minimum, "maximum": spec.maximum}
    if spec.kind == "checkbox":
        return gr.Checkbox, None
    return gr.Textbox, None


def on_ui_settings() -> None:
    for spec in SPECS:
        component, args = _component(spec)
        option = shared.OptionInfo(spec.default, spec.label, component, args, section=SECTION)
        if spec.info:
            option = option.info(spec.info)
        shared.opts.add_option(spec.key, option)


script_callbacks.on_ui_settings(on_ui_settings)
