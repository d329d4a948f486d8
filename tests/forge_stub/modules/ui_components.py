"""Forge's InputAccordion / ToolButton / FormRow on gradio 4 (written for the stand-in, shaped like
Forge's `modules/ui_components.py`): the accordion is a hidden checkbox holding the script's input
value plus a gr.Accordion; under gradio 3 the WebUI stand-in's versions are used instead."""
from __future__ import annotations

import gradio as gr

if int(gr.__version__.split(".")[0]) < 4:
    import importlib.util
    from pathlib import Path

    _a1111_file = Path(__file__).resolve().parents[2] / "webui_stub" / "modules" / "ui_components.py"
    _spec = importlib.util.spec_from_file_location("modules.a1111_ui_components", _a1111_file)
    _a1111 = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_a1111)
    FormComponent, ToolButton, FormRow, FormHTML, InputAccordion = (
        _a1111.FormComponent, _a1111.ToolButton, _a1111.FormRow, _a1111.FormHTML, _a1111.InputAccordion)
else:
    import gradio.component_meta

    _create_pyi = gradio.component_meta.create_or_modify_pyi

    def _no_pyi_for_webui_classes(component_class, class_name, events):
        # as Forge's gradio_extensions: gradio 4 would write a .pyi beside every component subclass
        if not hasattr(component_class, "webui_do_not_create_gradio_pyi_thank_you"):
            _create_pyi(component_class, class_name, events)

    if getattr(_create_pyi, "__name__", "") != "_no_pyi_for_webui_classes":
        gradio.component_meta.create_or_modify_pyi = _no_pyi_for_webui_classes

    class FormComponent:
        webui_do_not_create_gradio_pyi_thank_you = True

        def get_expected_parent(self):
            return gr.components.Form

    class ToolButton(gr.Button, FormComponent):
        def __init__(self, *args, **kwargs):
            classes = kwargs.pop("elem_classes", [])
            super().__init__(*args, elem_classes=["tool", *classes], **kwargs)

        def get_block_name(self):
            return "button"

    class FormRow(gr.Row, FormComponent):
        def get_block_name(self):
            return "row"

    class FormHTML(gr.HTML, FormComponent):
        def get_block_name(self):
            return "html"

    class InputAccordion(gr.Checkbox):
        webui_do_not_create_gradio_pyi_thank_you = True
        counter = 0

        def __init__(self, value, **kwargs):
            acc_id = kwargs.get("elem_id") or f"input-accordion-{InputAccordion.counter}"
            InputAccordion.counter += 1
            self.accordion_id = acc_id
            super().__init__(value, **{**kwargs, "elem_id": f"{acc_id}-checkbox", "visible": False})
            self.accordion = gr.Accordion(label=kwargs.get("label", "Accordion"), open=value, elem_id=acc_id,
                                          elem_classes=["input-accordion"])

        def extra(self):
            return gr.Column(elem_id=self.accordion_id + "-extra", elem_classes="input-accordion-extra", min_width=0)

        def __enter__(self):
            self.accordion.__enter__()
            return self

        def __exit__(self, *exc):
            self.accordion.__exit__(*exc)

        def get_block_name(self):
            return "checkbox"
