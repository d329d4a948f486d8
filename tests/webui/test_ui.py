"""The panel builds under gradio 3.41.2 in both tabs (as the WebUI builds it and as its API builds
the default args), settings register in their section, install.py is idempotent and never touches
torch, and the JavaScript parses."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from helpers.gradio3 import GRADIO_REASON
from webui_stub.fixture import ROOT, WebUI, installed, make_models_dir

gr = pytest.importorskip("gradio", reason=GRADIO_REASON)


@pytest.fixture(scope="module")
def env(tmp_path_factory, shared_dir):
    root = tmp_path_factory.mktemp("wplus_webui_ui")
    with installed(root / "webui"):
        yield WebUI(make_models_dir(root / "models", directions=True))


def test_gradio_is_the_webui_pin():
    assert gr.__version__ == "3.41.2"


def test_panel_builds_in_both_tabs(env):
    from wplus.webui.options import FIXED_FIELDS, PanelArgs, from_values

    ids = []
    for tab in ("txt2img", "img2img"):
        script = env.script(tab)
        assert script.alwayson and script.title() == "W+ Adapter"
        controls = script.controls
        assert len(controls) == script.args_to - script.args_from == len(FIXED_FIELDS) + len(script.direction_names)
        assert len(script.direction_names) > 20  # the paper's directions (InterFaceGAN, latent, GANSpace)
        assert isinstance(controls[0], gr.Checkbox) and controls[0].value is False  # the InputAccordion
        defaults = PanelArgs(adapter="wplus_adapter.bin", edits={n: 0.0 for n in script.direction_names})
        assert from_values([c.value for c in controls], script.direction_names) == defaults
        for c in controls:
            assert c.elem_id.startswith(f"script_{tab}_w_adapter_"), c.elem_id
        ids += [c.elem_id for c in controls]
        choices = controls[FIXED_FIELDS.index("identity")].choices
        assert {"person1", "person2"} <= set(choices and [x[0] if isinstance(x, tuple) else x for x in choices])
    assert len(ids) == len(set(ids)), "duplicate elem_ids"


def test_api_default_args_build(env):
    """The WebUI's API calls ui() again inside a throwaway gr.Blocks and reads each control's value."""
    script = env.script()
    with gr.Blocks():
        first = [c.value for c in script.ui(False)]
    with gr.Blocks():
        second = [c.value for c in script.ui(False)]
    assert first == second == [c.value for c in script.controls]


def test_infotext_fields_and_paste_names(env):
    from wplus.webui.infotext import ALL_KEYS

    runner, script = env.runners["txt2img"], env.script()
    components = {id(c) for c, _ in runner.infotext_fields}
    from wplus.webui.options import FIXED_FIELDS

    photos = {FIXED_FIELDS.index(n) for n in ("reference", "reference2", "more_references")}  # cannot come from text
    for i, c in enumerate(script.controls):
        assert (id(c) in components) == (i not in photos), c.label
    assert set(runner.paste_field_names) == set(ALL_KEYS)


def test_panel_buttons(env):
    """Reset all edits, the refresh buttons and source visibility are wired to working functions."""
    demo = env.blocks["txt2img"]
    script = env.script()
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}

    def fn_for(elem_id, trigger="click"):
        target = by_id[elem_id]._id
        for dep, fn in zip(demo.dependencies, demo.fns):
            if target in dep["targets"] and dep["trigger"] == trigger:  # gradio 3.41's layout
                return fn.fn
        raise AssertionError(f"no {trigger} handler on {elem_id}")

    reset = fn_for(script.elem_id("reset_edits"))()
    assert len(reset) == len(script.direction_names) and all(u["value"] == 0.0 for u in reset)
    upd = fn_for(script.elem_id("refresh_adapters"))("missing.bin")
    assert upd["value"] == "wplus_adapter.bin" and "wplus_adapter.bin" in upd["choices"]
    a, b = fn_for(script.elem_id("refresh_identities"))("person1", "gone")
    assert a["value"] == "person1" and b["value"] is None and "person2" in a["choices"]
    photo, ids, seed = fn_for(script.elem_id("source"), "change")("Random (seed)")
    assert (photo["visible"], ids["visible"], seed["visible"]) == (False, False, True)


def test_settings_section(env):
    from modules import shared

    from wplus.webui.settings import SECTION, SPECS

    for spec in SPECS:
        info = shared.opts.data_labels[spec.key]
        assert info.section == SECTION and info.label and info.default == spec.default
    assert shared.opts.data_labels["wplus_face_backend"].component_args["choices"] == ["auto", "facexlib", "dlib"]


def _load_install(monkeypatch, installed_modules):
    calls = []
    fake = types.ModuleType("launch")
    fake.is_installed = lambda name: name in installed_modules
    fake.run_pip = lambda args, desc: calls.append((args, desc))
    monkeypatch.setitem(sys.modules, "launch", fake)
    spec = importlib.util.spec_from_file_location("wplus_install", ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # importing must not install anything by itself
    assert calls == []
    return module, calls


def test_install_is_idempotent_pinned_and_leaves_torch_alone(monkeypatch):
    module, calls = _load_install(monkeypatch, {"dlib", "face_recognition_models"})
    assert module.main() == [] and calls == []
    module, calls = _load_install(monkeypatch, set())
    monkeypatch.setattr(module.importlib.util, "find_spec", lambda name: None)
    attempted = module.main()
    assert attempted == ["dlib-bin==20.0.1.post1", "face-recognition-models==0.3.0"]
    for args, desc in calls:
        assert args.startswith("install --no-deps ") and "==" in args and "torch" not in args
        assert "sd-webui-wplus" in desc
    reqs = (ROOT / "dev" / "requirements.txt").read_text()
    for requirement in attempted:
        assert requirement in reqs  # the same pins as the test environment


def test_install_failure_does_not_stop_the_webui(monkeypatch, capsys):
    module, calls = _load_install(monkeypatch, {"face_recognition_models"})
    monkeypatch.setattr(module.importlib.util, "find_spec", lambda name: None)

    def failing(args, desc):
        raise RuntimeError("no wheel for this platform")

    monkeypatch.setattr(sys.modules["launch"], "run_pip", failing)
    assert module.main() == ["dlib-bin==20.0.1.post1"]
    assert "facexlib" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_javascript_parses_and_knows_every_control(env):
    js = ROOT / "javascript" / "wplus.js"
    subprocess.run(["node", "--check", str(js)], check=True)
    from wplus.webui.panel import HINTS_ATTR

    script = env.script()
    served = env.served_controls()  # the table the panel serves to the JS (from the option schema)
    for c in script.controls:
        key = c.elem_id.split("_w_adapter_", 1)[1].removesuffix("-checkbox")  # InputAccordion's hidden box
        assert served.get(key, [""])[0], f"no hover hint for {key}"
    for extra in ("reset_edits", "refresh_adapters", "refresh_identities", "preview", "save", "save_name"):
        assert served[extra][0]
    assert HINTS_ATTR in js.read_text() and '"scale"' not in js.read_text()  # no second copy of the table
    assert Path(js).stat().st_size < 20000
