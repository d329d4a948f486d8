"""InputAccordion / ToolButton / FormRow written for the stand-in, shaped like the WebUI's: the
accordion is a hidden checkbox (the script's input value) plus a gr.Accordion that follows it."""
from __future__ import annotations

import gradio as gr


class FormComponent:
    def get_expected_parent(self):
        return gr.components.Form


class ToolButton(FormComponent, gr.Button):
    def __init__(self, *args, **kwargs):
        classes = kwargs.pop("elem_classes", [])
        super().__init__(*args, elem_classes=["tool", *classes], **kwargs)

    def get_block_name(self):
        return "button"


class FormRow(FormComponent, gr.Row):
    def get_block_name(self):
        return "row"


class FormHTML(FormComponent, gr.HTML):
    def get_block_name(self):
        return "html"


class InputAccordion(gr.Checkbox):
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
