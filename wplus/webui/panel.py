"""The W+ panel (gradio 3.41, the WebUI's pin): built from plain data and callbacks so it stays
testable without the WebUI; the script passes the WebUI's InputAccordion and ToolButton."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from wplus.webui.catalog import DirectionInfo
from wplus.webui.options import (
    DEFAULT_SCALE,
    DEFAULT_START,
    FIXED_FIELDS,
    MIX_MODES,
    SCALE_RANGE,
    SOURCES,
    SOURCES2,
    PanelArgs,
    from_values,
)

REFRESH_SYMBOL = "\U0001f504"  # 🔄
RESET_SYMBOL = "\u21ba"  # ↺


@dataclass
class PanelCallbacks:
    refresh_adapters: Callable[[], list[str]]
    refresh_identities: Callable[[], list[str]]
    preview: Callable[[PanelArgs], tuple[Any, Any, str]]  # (aligned crop, rendering, status text)
    save_identity: Callable[[PanelArgs, str], str]  # status text


@dataclass
class Panel:
    inputs: list = field(default_factory=list)  # in panel_state order: fixed fields, then edit sliders
    by_field: dict = field(default_factory=dict)
    edit_sliders: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)  # non-input components (preview images, buttons...)
    direction_names: list[str] = field(default_factory=list)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", name.lower())


def build(elem_id: Callable[[str], str], directions: Sequence[DirectionInfo], identities: Sequence[str],
          adapters: Sequence[str], callbacks: PanelCallbacks, accordion_cls: Any = None,
          tool_button_cls: Any = None, defaults: PanelArgs | None = None) -> Panel:
    import gradio as gr

    d = defaults or PanelArgs()
    panel = Panel(direction_names=[x.name for x in directions])
    f = panel.by_field
    tool = tool_button_cls or (lambda value, **kw: gr.Button(value=value, size="sm", **kw))

    with _accordion(gr, accordion_cls, elem_id("enabled"), d.enabled) as acc:
        f["enabled"] = acc.checkbox if hasattr(acc, "checkbox") else acc
        with gr.Row():
            f["source"] = gr.Radio(list(SOURCES), value=d.source, label="W+ identity source", elem_id=elem_id("source"))
        with gr.Row():
            f["reference"] = gr.Image(label="W+ reference photo", type="pil", source="upload",
                                      elem_id=elem_id("reference"), visible=d.source == SOURCES[0], height=256)
            with gr.Column(visible=d.source == SOURCES[1]) as id_col:
                with gr.Row():
                    f["identity"] = gr.Dropdown(list(identities), value=d.identity or "", label="W+ saved identity",
                                                elem_id=elem_id("identity"))
                    refresh_ids = tool(value=REFRESH_SYMBOL, elem_id=elem_id("refresh_identities"))
            with gr.Column(visible=d.source == SOURCES[2]) as seed_col:
                f["seed"] = gr.Number(value=d.seed, precision=0, label="W+ identity seed", elem_id=elem_id("seed"))
        f["face_index"] = gr.Number(value=d.face_index, precision=0, label="W+ face index",
                                    elem_id=elem_id("face_index"))
        with gr.Row():
            f["scale"] = gr.Slider(minimum=SCALE_RANGE[0], maximum=SCALE_RANGE[1], step=0.05, value=d.scale,
                                   label="W+ identity strength (λ)", elem_id=elem_id("scale"))
            f["start"] = gr.Slider(minimum=0, maximum=100, step=1, value=d.start,
                                   label="W+ start at step (%)", elem_id=elem_id("start"))
        with gr.Row():
            adapter_value = d.adapter or (adapters[0] if adapters else None)
            f["adapter"] = gr.Dropdown(list(adapters), value=adapter_value, label="W+ adapter file",
                                       elem_id=elem_id("adapter"))
            refresh_adapters = tool(value=REFRESH_SYMBOL, elem_id=elem_id("refresh_adapters"))

        with gr.Accordion("W+ mix with a second identity", open=False, elem_id=elem_id("mix_accordion")):
            f["source2"] = gr.Radio(list(SOURCES2), value=d.source2, label="W+ second identity",
                                    elem_id=elem_id("source2"))
            with gr.Row():
                f["reference2"] = gr.Image(label="W+ second photo", type="pil", source="upload",
                                           elem_id=elem_id("reference2"), visible=d.source2 == SOURCES[0], height=192)
                f["identity2"] = gr.Dropdown(list(identities), value=d.identity2 or "",
                                             label="W+ second saved identity", elem_id=elem_id("identity2"),
                                             visible=d.source2 == SOURCES[1])
                f["seed2"] = gr.Number(value=d.seed2, precision=0, label="W+ second identity seed",
                                       elem_id=elem_id("seed2"), visible=d.source2 == SOURCES[2])
            f["mix_mode"] = gr.Radio(list(MIX_MODES), value=d.mix_mode, label="W+ mix mode",
                                     elem_id=elem_id("mix_mode"))
            global_mix = d.mix_mode == MIX_MODES[0]
            f["mix"] = gr.Slider(0, 1, step=0.05, value=d.mix, label="W+ mix", elem_id=elem_id("mix"),
                                 visible=global_mix)
            with gr.Row(visible=not global_mix) as groups_row:
                f["mix_coarse"] = gr.Slider(0, 1, step=0.05, value=d.mix_coarse, label="W+ mix coarse (pose, shape)",
                                            elem_id=elem_id("mix_coarse"))
                f["mix_middle"] = gr.Slider(0, 1, step=0.05, value=d.mix_middle, label="W+ mix middle (features)",
                                            elem_id=elem_id("mix_middle"))
                f["mix_fine"] = gr.Slider(0, 1, step=0.05, value=d.mix_fine, label="W+ mix fine (colours, details)",
                                          elem_id=elem_id("mix_fine"))

        with gr.Accordion("W+ edit sliders", open=False, elem_id=elem_id("edits_accordion")):
            reset_edits = gr.Button(f"{RESET_SYMBOL} Reset all edits", size="sm", elem_id=elem_id("reset_edits"))
            for group, items in _grouped(directions):
                with gr.Accordion(group, open=group == "expression"):
                    for info in items:
                        panel.edit_sliders[info.name] = gr.Slider(
                            minimum=info.minimum, maximum=info.maximum, step=info.step,
                            value=float(d.edits.get(info.name, 0.0)), label=info.label,
                            elem_id=elem_id(f"edit_{slug(info.name)}"), elem_classes=["wplus-edit-slider"])
            if not directions:
                gr.HTML("<p>No edit directions found (models/w_direction).</p>")

        with gr.Accordion("W+ preview and save", open=False, elem_id=elem_id("preview_accordion")):
            with gr.Row():
                aligned = gr.Image(label="W+ aligned face", interactive=False, elem_id=elem_id("aligned"), height=192)
                rendered = gr.Image(label="W+ edited face (StyleGAN)", interactive=False, elem_id=elem_id("rendered"),
                                    height=192)
            with gr.Row():
                preview_btn = gr.Button("Preview face", elem_id=elem_id("preview"))
                save_name = gr.Textbox(label="W+ identity name", placeholder="name to save as",
                                       elem_id=elem_id("save_name"))
                save_btn = gr.Button("Save identity", elem_id=elem_id("save"))
            status = gr.Markdown("", elem_id=elem_id("status"))

    panel.inputs = [f[name] for name in FIXED_FIELDS] + [panel.edit_sliders[n] for n in panel.direction_names]
    panel.extras.update(aligned=aligned, rendered=rendered, status=status, preview=preview_btn, save=save_btn,
                        save_name=save_name, reset_edits=reset_edits, refresh_adapters=refresh_adapters,
                        refresh_identities=refresh_ids, accordion=acc)
    _wire(gr, panel, callbacks, id_col, seed_col, groups_row)
    return panel


def _grouped(directions: Sequence[DirectionInfo]) -> list[tuple[str, list[DirectionInfo]]]:
    groups: dict[str, list[DirectionInfo]] = {}
    for info in directions:
        groups.setdefault(info.group, []).append(info)
    return list(groups.items())


class _PlainAccordion:
    """Without the WebUI: a visible checkbox followed by an accordion."""

    def __init__(self, gr, elem_id: str, value: bool):
        self.checkbox = gr.Checkbox(value=value, label="Enable W+ Adapter", elem_id=elem_id)
        self.accordion = gr.Accordion("W+ Adapter", open=value)

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, *exc):
        self.accordion.__exit__(*exc)


def _accordion(gr, accordion_cls, elem_id: str, value: bool):
    if accordion_cls is None:
        return _PlainAccordion(gr, elem_id, value)
    return accordion_cls(value, label="W+ Adapter", elem_id=elem_id)


def _wire(gr, panel: Panel, cb: PanelCallbacks, id_col, seed_col, groups_row) -> None:
    f, x = panel.by_field, panel.extras

    def show_source(source):
        return (gr.update(visible=source == SOURCES[0]), gr.update(visible=source == SOURCES[1]),
                gr.update(visible=source == SOURCES[2]))

    f["source"].change(show_source, inputs=[f["source"]], outputs=[f["reference"], id_col, seed_col])
    f["source2"].change(show_source, inputs=[f["source2"]], outputs=[f["reference2"], f["identity2"], f["seed2"]])

    def show_mix(mode):
        return gr.update(visible=mode == MIX_MODES[0]), gr.update(visible=mode == MIX_MODES[1])

    f["mix_mode"].change(show_mix, inputs=[f["mix_mode"]], outputs=[f["mix"], groups_row])

    def refresh_adapters(current):
        names = cb.refresh_adapters()
        return gr.update(choices=names, value=current if current in names else (names[0] if names else None))

    x["refresh_adapters"].click(refresh_adapters, inputs=[f["adapter"]], outputs=[f["adapter"]])

    def refresh_identities(a, b):
        names = cb.refresh_identities()
        return (gr.update(choices=names, value=a if a in names else None),
                gr.update(choices=names, value=b if b in names else None))

    x["refresh_identities"].click(refresh_identities, inputs=[f["identity"], f["identity2"]],
                                  outputs=[f["identity"], f["identity2"]])

    sliders = list(panel.edit_sliders.values())
    if sliders:
        x["reset_edits"].click(lambda: [gr.update(value=0.0) for _ in sliders], inputs=[], outputs=sliders)

    names = panel.direction_names

    def preview(*values):
        return cb.preview(from_values(values, names))

    x["preview"].click(preview, inputs=panel.inputs, outputs=[x["aligned"], x["rendered"], x["status"]])

    def save(name, *values):
        status = cb.save_identity(from_values(values, names), name)
        ids = cb.refresh_identities()
        return status, gr.update(choices=ids), gr.update(choices=ids)

    x["save"].click(save, inputs=[x["save_name"], *panel.inputs], outputs=[x["status"], f["identity"], f["identity2"]])


def default_values(direction_names: Sequence[str]) -> list:
    from wplus.webui.options import to_values

    return to_values(PanelArgs(scale=DEFAULT_SCALE, start=DEFAULT_START), direction_names)
