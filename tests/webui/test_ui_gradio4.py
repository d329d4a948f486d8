"""The panel under Forge's gradio 4.40 (in the Forge stand-in): builds in both tabs with the same
controls, values and elem_ids as under gradio 3, the page config serialises (pydantic 2), the
infotext paste fields and settings register. Needs an environment with Forge's pins (gradio 4.40,
pydantic 2): skipped in the gradio 3 one."""
from __future__ import annotations

import warnings

import pytest

gr = pytest.importorskip("gradio")
if int(gr.__version__.split(".")[0]) < 4:
    pytest.skip(f"gradio {gr.__version__} is AUTOMATIC1111's pin; this test needs Forge's gradio 4.40 "
                "(see docs/hosts.md)", allow_module_level=True)

from forge_stub.fixture import installed  # noqa: E402

from webui_stub.fixture import FIX, WebUI, make_models_dir  # noqa: E402
from wplus.webui.options import FIXED_FIELDS  # noqa: E402


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if not FIX.is_dir():
        pytest.skip("../shared fixtures are not beside the checkout")
    root = tmp_path_factory.mktemp("wplus_forge_ui")
    with installed(root / "webui"):
        with warnings.catch_warnings(record=True) as caught:  # what Forge shows with "Show warnings" on
            warnings.simplefilter("always")
            webui = WebUI(make_models_dir(root / "models"))
        webui.build_warnings = [str(w.message) for w in caught]
        yield webui


def test_gradio_is_forges_pin():
    assert gr.__version__ == "4.40.0"


def test_panel_builds_in_both_tabs_as_under_gradio_3(env):
    from wplus.webui.options import FIXED_FIELDS, PanelArgs, from_values

    ids = []
    for tab in ("txt2img", "img2img"):
        script = env.script(tab)
        controls = script.controls
        assert len(controls) == script.args_to - script.args_from == len(FIXED_FIELDS) + len(script.direction_names)
        assert isinstance(controls[0], gr.Checkbox) and controls[0].value is False  # the InputAccordion
        defaults = PanelArgs(adapter="wplus_adapter.bin", edits={n: 0.0 for n in script.direction_names})
        assert from_values([c.value for c in controls], script.direction_names) == defaults
        reference = controls[FIXED_FIELDS.index("reference")]
        assert isinstance(reference, gr.Image) and reference.sources == ["upload"]
        ids += [c.elem_id for c in controls]
        for c in controls:
            assert c.elem_id.startswith(f"script_{tab}_w_adapter_"), c.elem_id
        config = env.blocks[tab].get_config_file()  # what the page loads: must serialise under pydantic 2
        assert any(comp.get("props", {}).get("elem_id") == controls[1].elem_id for comp in config["components"])
    assert len(ids) == len(set(ids)), "duplicate elem_ids"


def test_start_up_gives_no_dropdown_warnings(env):
    """Issue 18: Forge logged 12 "value ... is not in the list of choices" warnings at start-up."""
    assert not [w for w in env.build_warnings if "list of choices" in w]
    identity = env.script().controls[FIXED_FIELDS.index("identity")]
    assert identity.value is None and identity.allow_custom_value


def test_paste_fields_and_settings(env):
    from modules import shared

    from wplus.webui.infotext import ALL_KEYS
    from wplus.webui.settings import SECTION, SPECS

    runner = env.runners["txt2img"]
    assert set(runner.paste_field_names) == set(ALL_KEYS)
    from wplus.webui.options import OPTIONS

    photos = sum(o.kind == "image" for o in OPTIONS)  # photos cannot come from text
    assert len(runner.infotext_fields) == len(env.script().controls) - photos
    for spec in SPECS:
        assert shared.opts.data_labels[spec.key].section == SECTION
