"""The W+ panel (gradio 3.41, the WebUI's pin), built from the option schema (`options.OPTIONS`)
and plain data and callbacks so it stays testable without the WebUI; the script passes the
WebUI's InputAccordion and ToolButton.

First screen: identity source, the identity (photo and face index / saved identity / seed), λ,
start and the most-used edits; the other edits, the second identity, the adapter file and the
preview are in collapsed accordions. Hover hints and double-click reset values are served to
javascript/wplus.js in a hidden element (`HINTS_ATTR`), from the same schema.
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from wplus.errors import WPlusError
from wplus.webui.catalog import FIRST_SCREEN, AdapterChoices, DirectionInfo, group_label
from wplus.webui.options import FIXED_FIELDS, OPTION, MixMode, PanelArgs, Source, edit_option, from_values

REFRESH_SYMBOL = "\U0001f504"  # 🔄
RESET_SYMBOL = "\u21ba"  # ↺
HINTS_ATTR = "data-wplus-controls"  # the hidden element javascript/wplus.js reads its table from
TITLE = "W+ Adapter"
MORE_PHOTOS_TITLE = "More photos of the same person"  # the accordion; its file box has the option's label
FACE_INDEX_INFO = "0, 1, 2…: the faces from left to right"  # the label says what -1 is
AD_IDENTITIES_PLACEHOLDER = "alice, bob (empty: the identity above)"  # the hint says the rest
ALIGNED_LABEL = "Aligned face (e4e sees it on white)"

# controls that are not options: element id suffix -> hover hint
BUTTON_HINTS = {
    "refresh_identities": "Re-read the saved identities folder.",
    "refresh_adapters": "Re-read the models folder for adapter files.",
    "reset_edits": "Set every edit slider back to 0 (no edit).",
    "preview": "Show the aligned face and StyleGAN's rendering of the edited code, without running diffusion.",
    "save_name": "Name for the identity file (models/identities/NAME.safetensors).",
    "save": "Save the current identity (with its edits and mix baked in) for reuse, the API and X/Y/Z plots.",
    "aligned": "The detected face, FFHQ-aligned, shown with the photo's background; e4e encodes it with the "
               "background set to white.",
    "rendered": "StyleGAN's rendering of the W+ code after edits and mixing: a preview of the face that is injected.",
}


@dataclass
class PanelCallbacks:
    refresh_adapters: Callable[[str], AdapterChoices]  # the dropdown's state, keeping the current file if listed
    refresh_identities: Callable[[], list[str]]
    preview: Callable[[PanelArgs], tuple[Any, Any, str]]  # (aligned crop, rendering, status text)
    save_identity: Callable[[PanelArgs, str], str]  # status text


@dataclass
class Panel:
    inputs: list = field(default_factory=list)  # in OPTIONS order: fixed fields, then edit sliders
    by_field: dict = field(default_factory=dict)
    edit_sliders: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)  # non-input components (preview images, buttons...)
    direction_names: list[str] = field(default_factory=list)
    hints: dict = field(default_factory=dict)  # element id suffix -> [hint, reset value or None] (for the JS)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", name.lower())


def control_table(directions: Sequence[DirectionInfo]) -> dict[str, list]:
    """What javascript/wplus.js shows and resets: element id suffix -> [hint, reset value or None]."""
    table = {o.name: [o.hint, o.reset] for o in OPTION.values()}
    table.update({k: [v, None] for k, v in BUTTON_HINTS.items()})
    for info in directions:
        table[f"edit_{slug(info.name)}"] = [info.hint, edit_option(info.name).reset]
    return table


def _upload_only(gr: Any) -> dict:
    """gr.Image's upload-only argument: `source=` in gradio 3 (AUTOMATIC1111), `sources=[...]` in
    gradio 4 (Forge, whose own shim also maps the old name)."""
    return {"sources": ["upload"]} if _gradio_major(gr) >= 4 else {"source": "upload"}


def _file_type(gr: Any) -> str:
    """gr.File's value type: temp-file objects (`.name`) in gradio 3; gradio 4 has no "file" type, and
    "binary" hands the session the uploaded bytes, which it takes as they are (session.reference_list)."""
    return "binary" if _gradio_major(gr) >= 4 else "file"


def _gradio_major(gr: Any) -> int:
    return int(gr.__version__.split(".")[0])


def _kw(name: str, d: PanelArgs, elem_id: Callable[[str], str], **extra) -> dict:
    """A component's arguments from its option: label, value, range, step, elem_id."""
    o = OPTION[name]
    kw = dict(label=o.label, value=getattr(d, name), elem_id=elem_id(name))
    if o.kind == "choice":
        kw.update(choices=[str(c) for c in o.choices], value=str(getattr(d, name)))
    if o.kind == "float":
        kw.update(minimum=o.ui_range[0], maximum=o.ui_range[1], step=o.step)
    if o.kind == "int":
        kw.update(precision=0, minimum=o.minimum, maximum=o.maximum)
    return {**kw, **extra}


def build(elem_id: Callable[[str], str], directions: Sequence[DirectionInfo], identities: Sequence[str],
          adapters: AdapterChoices, callbacks: PanelCallbacks, accordion_cls: Any = None,
          tool_button_cls: Any = None, defaults: PanelArgs | None = None, adetailer: bool = False) -> Panel:
    """The panel's components, wired. `adetailer`: ADetailer is installed (otherwise the face-pass
    group is hidden; its controls stay in the positional args with their defaults)."""
    import gradio as gr

    d = defaults or PanelArgs()
    panel = Panel(direction_names=[x.name for x in directions], hints=control_table(directions))
    tool = tool_button_cls or (lambda value, **kw: gr.Button(value=value, size="sm", **kw))
    b = _Builder(gr, panel, d, elem_id, tool)

    with _accordion(gr, accordion_cls, elem_id("enabled"), d.enabled) as acc:
        panel.by_field["enabled"] = acc.checkbox if hasattr(acc, "checkbox") else acc
        gr.HTML(f'<div hidden {HINTS_ATTR}="{html.escape(json.dumps(panel.hints), quote=True)}"></div>',
                elem_id=elem_id("controls_data"), elem_classes=["wplus-controls-data"])
        columns = _identity_section(b, identities)
        _edits_section(b, directions)
        groups_row = _mix_section(b, identities)
        _adetailer_section(b, adetailer)
        _adapter_section(b, adapters)
        _preview_section(b)

    f = panel.by_field
    panel.inputs = [f[name] for name in FIXED_FIELDS] + [panel.edit_sliders[n] for n in panel.direction_names]
    panel.extras.update(accordion=acc, photo_column=columns[0])
    _wire(gr, panel, callbacks, *columns, groups_row)
    return panel


@dataclass
class _Builder:
    """What every section of the panel is built with."""

    gr: Any
    panel: Panel
    d: PanelArgs
    elem_id: Callable[[str], str]
    tool: Callable[..., Any]

    def kw(self, name: str, **extra) -> dict:
        return _kw(name, self.d, self.elem_id, **extra)


def _listed(value: str, choices: Sequence[str]) -> str | None:
    """A dropdown's start value: one of its choices, or None (gradio 4 warns about any other)."""
    return value if value in choices else None


def _identity_section(b: _Builder, identities: Sequence[str]) -> tuple:
    """Source, then one column per source: photo (+ more photos, face index), saved identity, seed."""
    gr, f, d = b.gr, b.panel.by_field, b.d
    with gr.Row():
        f["source"] = gr.Radio(**b.kw("source"))
    with gr.Row():
        with gr.Column(visible=d.source == Source.PHOTO) as photo_col:
            f["reference"] = gr.Image(type="pil", **_upload_only(gr), height=256, **b.kw("reference"))
            with gr.Accordion(MORE_PHOTOS_TITLE, open=False, elem_id=b.elem_id("more_references_accordion")):
                f["more_references"] = gr.File(file_count="multiple", file_types=["image"], type=_file_type(gr),
                                               **b.kw("more_references"))
            f["face_index"] = gr.Number(info=FACE_INDEX_INFO, **b.kw("face_index"))
        with gr.Column(visible=d.source == Source.SAVED) as id_col:
            with gr.Row():
                f["identity"] = gr.Dropdown(list(identities), allow_custom_value=True,
                                            **b.kw("identity", value=_listed(d.identity, identities)))
                b.panel.extras["refresh_identities"] = b.tool(value=REFRESH_SYMBOL,
                                                              elem_id=b.elem_id("refresh_identities"))
        with gr.Column(visible=d.source == Source.SEED) as seed_col:
            f["seed"] = gr.Number(**b.kw("seed"))
    with gr.Row():
        f["scale"] = gr.Slider(**b.kw("scale"))
        f["start"] = gr.Slider(**b.kw("start"))
    return photo_col, id_col, seed_col


def _edits_section(b: _Builder, directions: Sequence[DirectionInfo]) -> None:
    """The most-used edits, a reset button, then the others grouped in a collapsed accordion."""
    gr = b.gr
    first = [x for x in directions if x.name in FIRST_SCREEN and not x.advanced]
    rest = [x for x in directions if x not in first]
    with gr.Row():
        for info in first:
            _edit_slider(gr, b.panel, info, b.d, b.elem_id)
    b.panel.extras["reset_edits"] = gr.Button(f"{RESET_SYMBOL} Reset all edits", size="sm",
                                              elem_id=b.elem_id("reset_edits"))
    with gr.Accordion("More edits", open=False, elem_id=b.elem_id("edits_accordion")):
        for group, items in _grouped([x for x in rest if not x.advanced]):
            with gr.Accordion(group_label(group), open=False):
                for info in items:
                    _edit_slider(gr, b.panel, info, b.d, b.elem_id)
        advanced = [x for x in rest if x.advanced]
        if advanced:
            with gr.Accordion("Advanced: the same attributes from other sources", open=False,
                              elem_id=b.elem_id("advanced_edits")):
                for info in advanced:
                    _edit_slider(gr, b.panel, info, b.d, b.elem_id)
        if not directions:
            gr.HTML("<p>No edit directions found (models/w_direction).</p>")


def _mix_section(b: _Builder, identities: Sequence[str]) -> Any:
    """The second identity and its weights; returns the row of per-group sliders."""
    gr, f, d = b.gr, b.panel.by_field, b.d
    with gr.Accordion("Mix with a second identity", open=False, elem_id=b.elem_id("mix_accordion")):
        f["source2"] = gr.Radio(**b.kw("source2"))
        with gr.Row():
            f["reference2"] = gr.Image(type="pil", **_upload_only(gr), height=192,
                                       visible=d.source2 == Source.PHOTO, **b.kw("reference2"))
            f["identity2"] = gr.Dropdown(list(identities), visible=d.source2 == Source.SAVED, allow_custom_value=True,
                                         **b.kw("identity2", value=_listed(d.identity2, identities)))
            f["seed2"] = gr.Number(visible=d.source2 == Source.SEED, **b.kw("seed2"))
        f["mix_mode"] = gr.Radio(**b.kw("mix_mode"))
        global_mix = d.mix_mode == MixMode.GLOBAL
        f["mix"] = gr.Slider(visible=global_mix, **b.kw("mix"))
        with gr.Row(visible=not global_mix) as groups_row:
            for name in ("mix_coarse", "mix_middle", "mix_fine"):
                f[name] = gr.Slider(**b.kw(name))
    return groups_row


def _adetailer_section(b: _Builder, installed: bool) -> None:
    """ADetailer's face pass; hidden when ADetailer is not installed (the session ignores it then)."""
    gr, f = b.gr, b.panel.by_field
    with gr.Accordion("In ADetailer's face pass", open=False, visible=installed, elem_id=b.elem_id("ad_accordion")):
        f["ad_enabled"] = gr.Checkbox(**b.kw("ad_enabled"))
        f["ad_scale"] = gr.Slider(**b.kw("ad_scale"))
        f["ad_identities"] = gr.Textbox(placeholder=AD_IDENTITIES_PLACEHOLDER, **b.kw("ad_identities"))


def _adapter_section(b: _Builder, adapters: AdapterChoices) -> None:
    gr, f = b.gr, b.panel.by_field
    with gr.Accordion("Adapter file", open=False, elem_id=b.elem_id("adapter_accordion")):
        with gr.Row():
            f["adapter"] = gr.Dropdown(list(adapters.names), info=adapters.info or None,
                                       **b.kw("adapter", value=b.d.adapter or adapters.value))
            b.panel.extras["refresh_adapters"] = b.tool(value=REFRESH_SYMBOL, elem_id=b.elem_id("refresh_adapters"))


def _preview_section(b: _Builder) -> None:
    gr, elem_id = b.gr, b.elem_id
    with gr.Accordion("Preview and save", open=False, elem_id=elem_id("preview_accordion")):
        with gr.Row():
            aligned = gr.Image(label=ALIGNED_LABEL, interactive=False, elem_id=elem_id("aligned"), height=192)
            rendered = gr.Image(label="Edited face (StyleGAN)", interactive=False, elem_id=elem_id("rendered"),
                                height=192)
        with gr.Row():
            preview_btn = gr.Button("Preview face", elem_id=elem_id("preview"))
            save_name = gr.Textbox(label="Identity name", placeholder="name to save as", elem_id=elem_id("save_name"))
            save_btn = gr.Button("Save identity", elem_id=elem_id("save"))
        status = gr.Markdown("", elem_id=elem_id("status"))
    b.panel.extras.update(aligned=aligned, rendered=rendered, status=status, preview=preview_btn, save=save_btn,
                          save_name=save_name)


def _edit_slider(gr, panel: Panel, info: DirectionInfo, d: PanelArgs, elem_id: Callable[[str], str]) -> None:
    panel.edit_sliders[info.name] = gr.Slider(
        minimum=info.minimum, maximum=info.maximum, step=info.step, value=float(d.edits.get(info.name, 0.0)),
        label=info.label, elem_id=elem_id(f"edit_{slug(info.name)}"), elem_classes=["wplus-edit-slider"])


def _grouped(directions: Sequence[DirectionInfo]) -> list[tuple[str, list[DirectionInfo]]]:
    groups: dict[str, list[DirectionInfo]] = {}
    for info in directions:
        groups.setdefault(info.group, []).append(info)
    return list(groups.items())


class _PlainAccordion:
    """Without the WebUI: a visible checkbox followed by an accordion."""

    def __init__(self, gr, elem_id: str, value: bool):
        self.checkbox = gr.Checkbox(value=value, label=OPTION["enabled"].label, elem_id=elem_id)
        self.accordion = gr.Accordion(TITLE, open=value)

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, *exc):
        self.accordion.__exit__(*exc)


def _accordion(gr, accordion_cls, elem_id: str, value: bool):
    if accordion_cls is None:
        return _PlainAccordion(gr, elem_id, value)
    return accordion_cls(value, label=TITLE, elem_id=elem_id)


def _wire(gr, panel: Panel, cb: PanelCallbacks, photo_col, id_col, seed_col, groups_row) -> None:
    f, x = panel.by_field, panel.extras

    def show_source(source):
        return (gr.update(visible=source == Source.PHOTO), gr.update(visible=source == Source.SAVED),
                gr.update(visible=source == Source.SEED))

    f["source"].change(show_source, inputs=[f["source"]], outputs=[photo_col, id_col, seed_col])
    f["source2"].change(show_source, inputs=[f["source2"]], outputs=[f["reference2"], f["identity2"], f["seed2"]])

    def show_mix(mode):
        return gr.update(visible=mode == MixMode.GLOBAL), gr.update(visible=mode == MixMode.PER_GROUP)

    f["mix_mode"].change(show_mix, inputs=[f["mix_mode"]], outputs=[f["mix"], groups_row])

    def refresh_adapters(current):
        state = cb.refresh_adapters(current or "")
        return gr.update(choices=state.names, value=state.value, info=state.info)  # "" clears the note

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
        try:
            return cb.preview(from_values(values, names))
        except WPlusError as e:  # a value outside its option's limits
            return None, None, f"**{e}**"

    x["preview"].click(preview, inputs=panel.inputs, outputs=[x["aligned"], x["rendered"], x["status"]])

    def save(name, *values):
        try:
            status = cb.save_identity(from_values(values, names), name)
        except WPlusError as e:
            status = f"**{e}**"
        ids = cb.refresh_identities()
        return status, gr.update(choices=ids), gr.update(choices=ids)

    x["save"].click(save, inputs=[x["save_name"], *panel.inputs], outputs=[x["status"], f["identity"], f["identity2"]])
