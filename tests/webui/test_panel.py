"""The panel as the WebUI builds it (gradio 3.41.2, the WebUI stand-in): every control's range,
label and default come from the option schema, the JavaScript reads its hints and reset values
from the panel, X/Y/Z axes check values with the options' own errors, and what a new user saw in
the real WebUI: face index with the photo only, readable labels that say W+ once, a compact first
screen, the adapter dropdown's state, the offline cause named, the empty source reported first and
no local folders in the image's metadata."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess

import pytest

from helpers.gradio3 import GRADIO_REASON
from webui_stub.fixture import FIX, ROOT, WebUI, installed, kept_settings, make_models_dir
from wplus.webui.options import OPTION, OPTIONS, OptionError, PanelArgs, edit_option, to_values

gr = pytest.importorskip("gradio", reason=GRADIO_REASON)

PERSON1 = dict(enabled=True, source="Saved identity", identity="person1")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if not FIX.is_dir():
        pytest.skip("../shared fixtures are not beside the checkout")
    root = tmp_path_factory.mktemp("wplus_webui_panel")
    with installed(root / "webui"):
        yield WebUI(make_models_dir(root / "models", directions=True))


@pytest.fixture(autouse=True)
def clean(env):
    with kept_settings():
        yield
    env.script_module.EXTENSION.resolvers.clear()


def blocks_of(env, tab="txt2img") -> dict:
    """elem_id suffix -> component, for everything inside the W+ panel."""
    prefix = env.script(tab).elem_id("")
    return {b.elem_id[len(prefix):]: b for b in env.blocks[tab].blocks.values()
            if isinstance(getattr(b, "elem_id", None), str) and b.elem_id.startswith(prefix)}


def accordions_above(block) -> list:
    out, node = [], block.parent
    while node is not None:
        if isinstance(node, gr.Accordion):
            out.append(node)
        node = node.parent
    return out


def column_of(block):
    node = block.parent
    while not isinstance(node, gr.Column):  # gradio puts form fields in a Form first
        node = node.parent
    return node


def click_handler(env, suffix: str, tab="txt2img"):
    target = blocks_of(env, tab)[suffix]._id
    demo = env.blocks[tab]
    for dep, fn in zip(demo.dependencies, demo.fns):
        if target in dep["targets"] and dep["trigger"] == "click":  # gradio 3.41's layout
            return fn.fn
    raise AssertionError(f"no click handler on {suffix}")


def served(env, tab="txt2img") -> dict:
    return env.served_controls(tab)


# --- each option defined once -----------------------------------------------------------------------


def test_panel_controls_come_from_the_schema(env):
    comps = blocks_of(env)
    for option in OPTIONS:
        c = comps[option.name] if option.name != "enabled" else env.script().controls[0]
        if option.name != "enabled":
            assert c.label == option.label, option.name
        if option.kind == "float":
            assert (c.minimum, c.maximum, c.step) == (*option.ui_range, option.step), option.name
            assert c.value == option.default
        if option.kind == "int":
            assert isinstance(c, gr.Number) and c.precision == 0 and c.minimum == option.minimum, option.name
        if option.kind == "choice":
            values = [x[1] if isinstance(x, tuple) else x for x in c.choices]  # gradio 3.41's Radio: (name, value)
            assert values == [str(x) for x in option.choices] and c.value == str(option.default)
    script = env.script()
    for name in script.direction_names:
        slider = comps[f"edit_{env.script_module.wpanel.slug(name)}"]
        assert script.edit_limits[name] == (slider.minimum, slider.maximum)


def test_javascript_reads_hints_and_reset_values_served_from_the_schema(env):
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    table = served(env)
    data_attr = json.dumps(table)
    ids = [f"script_txt2img_w_adapter_{o.name}" for o in OPTIONS] + ["script_img2img_w_adapter_edit_smile",
                                                                       "script_txt2img_w_adapter_nothing"]
    harness = f"""
        var data = {{getAttribute: function() {{ return {json.dumps(data_attr)}; }}}};
        global.window = {{}};
        global.document = {{addEventListener: function() {{}},
                            querySelectorAll: function(sel) {{
                                return sel === "[data-wplus-controls]" ? [data] : []; }}}};
        require({json.dumps(str(ROOT / "javascript" / "wplus.js"))});
        console.log(JSON.stringify({json.dumps(ids)}.map(function(id) {{ return window.wplusControlOf(id); }})));
    """
    out = subprocess.run(["node", "-e", harness], check=True, capture_output=True, text=True).stdout
    got = json.loads(out)
    for option, ctl in zip(OPTIONS, got):
        assert ctl["hint"] == option.hint and ctl["reset"] == option.reset, option.name
    assert got[-2]["reset"] == edit_option("smile").reset == 0.0 and "InterFaceGAN" in got[-2]["hint"]
    assert got[-1] is None
    assert OPTION["scale"].reset == 1.0 and OPTION["start"].reset == 20.0 and OPTION["seed"].reset is None


def test_xyz_axes_and_their_errors_come_from_the_schema(env):
    xyz = env.module("xyz_grid.py")
    ours = {o.label: o for o in xyz.axis_options if o.label.startswith("[W+] ")}
    for option in OPTIONS:
        if option.xyz_label:
            assert f"[W+] {option.xyz_label}" in ours
    p = env.processing(wplus=dict(PERSON1))
    for label, option, bad in (("[W+] Identity strength (λ)", OPTION["scale"], 9.0),
                               ("[W+] Start at step (%)", OPTION["start"], 101.0),
                               ("[W+] Edit smile", edit_option("smile", *env.script().edit_limits["smile"]), 99.0)):
        with pytest.raises(OptionError) as expected:
            option.check(bad)
        with pytest.raises(RuntimeError) as info:
            ours[label].confirm(p, [bad])
        assert str(expected.value) in str(info.value)


def test_bad_positional_value_and_bad_paste_get_the_options_error(env, caplog):
    from modules import infotext_utils

    with pytest.raises(OptionError) as expected:
        OPTION["scale"].check(9.0)
    message = str(expected.value).removeprefix("W+ Adapter: ")
    _, p = env.generate(raw=to_values(PanelArgs(**PERSON1, scale=9.0), env.script().direction_names))
    assert list(p.comments) == [f"W+ Adapter disabled: {message}"]
    _, p = env.generate(raw=[{"identity": "person1", "scale": 9}])
    assert list(p.comments) == [f"W+ Adapter disabled: {message}"]

    runner = env.runners["txt2img"]
    with caplog.at_level(logging.WARNING, logger="wplus"):
        values = infotext_utils.paste(runner.infotext_fields, "a cat\nSteps: 20, Wplus identity: person1, "
                                                              "Wplus lambda: 9")
    assert all(v is None for v in values)  # the panel stays as it is
    assert message in caplog.text


# --- issue 13: the panel as a user sees it -----------------------------------------------------------


def test_face_index_is_a_number_shown_with_the_photo_only(env):
    comps = blocks_of(env)
    face = comps["face_index"]
    assert isinstance(face, gr.Number) and face.precision == 0 and face.minimum == -1
    column = column_of(face)
    assert column_of(comps["reference"]) is column and face.visible and column.visible
    assert column_of(comps["seed"]) is not column and column_of(comps["identity"]) is not column
    demo = env.blocks["txt2img"]
    for dep in demo.dependencies:
        if comps["source"]._id in dep["targets"] and dep["trigger"] == "change":
            assert dep["outputs"][0] == column._id  # the column that holds the photo and its face index


def test_labels_say_w_plus_once_and_directions_read_well(env):
    comps = blocks_of(env)
    panel_blocks = [b for b in env.blocks["txt2img"].blocks.values()
                    if any(a.label == "W+ Adapter" for a in accordions_above(b)) or b in comps.values()]
    labels = [(getattr(b, "label", None) or "") for b in panel_blocks]
    assert len(panel_blocks) > 50 and not [x for x in labels if "W+" in x and x != "W+ Adapter"]
    assert comps["edit_emotion_easy"].label == "Calm" and comps["edit_smile"].label == "Smile"
    groups = {a.label for b in panel_blocks for a in accordions_above(b)}
    assert {"Expression", "Age & gender"} <= groups and "expression" not in groups
    advanced = comps["advanced_edits"]
    assert all(advanced in accordions_above(comps[f"edit_latent_{n}"]) for n in ("smile", "age"))
    assert advanced not in accordions_above(comps["edit_smile"])
    assert comps["edit_latent_smile"].label == "Smile (latent)"
    hint = served(env)["edit_latent_smile"][0]
    assert "latent" in hint and "W+ layers" in hint


def test_first_screen_is_compact(env):
    comps = blocks_of(env)
    main = [a for a in accordions_above(comps["source"]) if a.label == "W+ Adapter"][0]
    first = {k for k, b in comps.items() if isinstance(b, gr.components.IOComponent) or isinstance(b, gr.Button)
             if accordions_above(b) == [main]}
    assert first == {"source", "reference", "face_index", "identity", "refresh_identities", "seed", "scale", "start",
                     "controls_data", "reset_edits", "edit_smile", "edit_age", "edit_gender", "edit_glasses"}, first
    inner = {a for b in comps.values() for a in accordions_above(b) if a is not main}
    assert inner and not [a.label for a in inner if a.open]
    assert not main.open  # closed = W+ off


def test_issue_18_texts_a_newcomer_can_read(env):
    comps = blocks_of(env)
    assert "-1" in comps["face_index"].label and "largest" in comps["face_index"].label
    assert comps["more_references_accordion"].label != comps["more_references"].label
    assert "white" in comps["aligned"].label  # the preview shows the photo's background; e4e gets it whitened
    placeholder = comps["ad_identities"].placeholder
    assert len(placeholder) <= 40 and "alice, bob" in placeholder  # fits the box (issue 18: it was cut off)


def test_adetailers_group_is_hidden_without_adetailer(env):
    comps = blocks_of(env)
    group = comps["ad_accordion"]
    assert group.visible is False
    for name in ("ad_enabled", "ad_scale", "ad_identities"):
        assert group in accordions_above(comps[name])  # still positional args, with their defaults
    assert comps["ad_enabled"].value is OPTION["ad_enabled"].default


def test_identity_dropdowns_start_on_a_listed_value(env, tmp_path):
    """gradio 4 warns at start-up about a value outside the choices (issue 18: 12 warnings in Forge)."""
    import warnings

    from wplus.webui import catalog, panel

    callbacks = panel.PanelCallbacks(lambda current: None, lambda: [], lambda args: None, lambda args, name: "")
    adapters = catalog.AdapterChoices(["wplus_adapter.bin"], "wplus_adapter.bin")
    for defaults, listed in ((PanelArgs(), None), (PanelArgs(identity="person2", identity2="gone"), "person2")):
        with warnings.catch_warnings(record=True) as caught, gr.Blocks():
            warnings.simplefilter("always")
            built = panel.build(lambda n: f"t_{n}", [], ["person1", "person2"], adapters, callbacks,
                                defaults=defaults)
        assert not [str(w.message) for w in caught if "choices" in str(w.message)]
        identity, identity2 = built.by_field["identity"], built.by_field["identity2"]
        assert (identity.value, identity2.value) == (listed, None)
        assert identity.allow_custom_value and identity2.allow_custom_value  # a pasted name may be on another disk


def test_adapter_dropdown_marks_or_avoids_a_missing_default(env, tmp_path, monkeypatch):
    from modules import shared

    monkeypatch.setattr(env.script_module, "EXT_MODELS", tmp_path / "no_ext_models")
    monkeypatch.setattr(env.script_module.EXTENSION, "ext_models", tmp_path / "no_ext_models")
    empty = make_models_dir(tmp_path / "models", adapter=False)
    shared.opts.wplus_models_dir = str(empty)
    shared.opts.wplus_auto_download = True
    with gr.Blocks():
        controls = env.script().ui(False)
    adapter = controls[list(OPTION).index("adapter")]
    assert adapter.value == "wplus_adapter.bin" and "(will be downloaded)" in adapter.info
    refresh = click_handler(env, "refresh_adapters")
    shared.opts.wplus_auto_download = False
    update = refresh("wplus_adapter.bin")
    assert "Download missing W+ weights automatically is off" in update["info"]
    (empty / "mine.safetensors").write_bytes(b"weights")
    update = refresh("")
    assert update["value"] == "mine.safetensors" and update["info"] == ""  # select what exists, note cleared
    with gr.Blocks():
        env.script().ui(False)  # leave the script's state as the module's panel built it


def test_offline_variable_is_named_when_the_setting_is_on(env, tmp_path, monkeypatch):
    from modules import shared

    monkeypatch.setattr(env.script_module, "EXT_MODELS", tmp_path / "no_ext_models")
    monkeypatch.setattr(env.script_module.EXTENSION, "ext_models", tmp_path / "no_ext_models")
    monkeypatch.delenv("WPLUS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    shared.opts.wplus_models_dir = str(make_models_dir(tmp_path / "models", adapter=False))
    shared.opts.wplus_auto_download = True
    _, p = env.generate(wplus=dict(PERSON1))
    assert any("HF_HUB_OFFLINE=1" in c for c in p.comments), p.comments
    monkeypatch.delenv("HF_HUB_OFFLINE")
    shared.opts.wplus_auto_download = False
    _, p = env.generate(wplus=dict(PERSON1))
    assert any("Download missing W+ weights automatically is off" in c for c in p.comments), p.comments


def test_empty_photo_is_reported_before_the_missing_adapter(env, tmp_path, monkeypatch):
    from modules import shared

    monkeypatch.setattr(env.script_module, "EXT_MODELS", tmp_path / "no_ext_models")
    monkeypatch.setattr(env.script_module.EXTENSION, "ext_models", tmp_path / "no_ext_models")
    shared.opts.wplus_models_dir = str(make_models_dir(tmp_path / "models", adapter=False))
    _, p = env.generate(wplus=dict(enabled=True, source="Photo"))
    assert len(p.comments) == 1 and "no reference photo" in next(iter(p.comments)), p.comments
    assert "wplus_adapter.bin" not in next(iter(p.comments))


def test_image_metadata_has_no_local_folders(env, tmp_path, monkeypatch, caplog):
    from modules import shared

    monkeypatch.setattr(env.script_module, "EXT_MODELS", tmp_path / "no_ext_models")
    monkeypatch.setattr(env.script_module.EXTENSION, "ext_models", tmp_path / "no_ext_models")
    empty = make_models_dir(tmp_path / "models", adapter=False)
    shared.opts.wplus_models_dir = str(empty)
    with caplog.at_level(logging.WARNING, logger="wplus"):
        res, p = env.generate(wplus=dict(PERSON1))
    warning = p.extra_generation_params["Wplus warning"]
    assert "wplus_adapter.bin" in warning and "github.com/csxmli2016/w-plus-adapter" in warning
    assert str(tmp_path) not in warning and str(tmp_path) not in res.infotexts[0]
    assert str(empty) in caplog.text and any(str(empty) in c for c in p.comments)  # the console keeps it


def test_api_info_lists_the_schemas_limits(env):
    info = env.module("wplus_api.py").info()
    assert info["limits"]["scale"] == [OPTION["scale"].minimum, OPTION["scale"].maximum] == [0.0, 4.0]
    assert info["limits"]["face_index"] == [-1, None] and info["limits"]["mix"] == [0.0, 1.0]
    smile = next(d for d in info["directions"] if d["name"] == "smile")
    assert (smile["min"], smile["max"]) == env.script().edit_limits["smile"]
