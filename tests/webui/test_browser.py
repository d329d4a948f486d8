"""The W+ panel in a real browser: `wplus.webui.panel.build` inside a plain gradio app (gradio 3.41
in the WebUI environment, 4.40 in the Forge one), served on 127.0.0.1 and driven by Playwright
through Debian's chromium (the system browser; Playwright downloads none). javascript/wplus.js is
loaded as the WebUI loads it. A "Generate" button receives the panel's components in the script's
positional order and records what it got: that is exactly what the WebUI hands the script.

Checked: a face photo uploaded through the photo box and two through "More photos" reach the args
as images/files the session reads; switching the source shows the face index with the photo only;
double-clicking λ's label resets it; every value converts back with `options.from_values`."""
from __future__ import annotations

import io
import shutil
import socket
import threading
from pathlib import Path

import pytest
from PIL import Image

from conftest import OFFICIAL, ROOT

gr = pytest.importorskip("gradio", reason="needs gradio (the WebUI or Forge test environment)")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (dev/requirements-*.txt)")

from wplus.generation.photos import reference_list  # noqa: E402
from wplus.webui import catalog  # noqa: E402
from wplus.webui import panel as wpanel  # noqa: E402
from wplus.webui.options import FIXED_FIELDS, OPTION, PanelArgs, Source, from_values  # noqa: E402

pytestmark = pytest.mark.needs_shared  # the face photos

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
if CHROMIUM is None:
    pytest.skip("needs Debian's chromium on PATH (apt-get install -y chromium; dev/setup.sh installs it)",
                allow_module_level=True)

PREFIX = "script_txt2img_w_adapter_"
IDENTITIES = ["alice", "bob"]
PHOTO = OFFICIAL / "test_data" / "in_the_wild" / "1.jpg"
MORE = [OFFICIAL / "test_data" / "in_the_wild" / "2.png", OFFICIAL / "test_data" / "aligned_face" / "1.png"]
TIMEOUT_MS = 30_000
# the WebUI calls extensions' onUiUpdate callbacks on DOM changes; gradioApp() is its root lookup
WEBUI_SHIM = """
window.gradioApp = function() { return document; };
window.onUiUpdate = function(callback) {
    new MutationObserver(function() { callback(); }).observe(document, {childList: true, subtree: true});
};
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """The panel plus a Generate button that records the positional args it receives."""

    def __init__(self):
        self.calls: list[list] = []
        self.lock = threading.Lock()
        directions = catalog.direction_catalog(Path("/nonexistent/wplus-models"))  # the registry's sliders
        callbacks = wpanel.PanelCallbacks(
            refresh_adapters=lambda current: catalog.AdapterChoices([catalog.DEFAULT_ADAPTER], catalog.DEFAULT_ADAPTER),
            refresh_identities=lambda: list(IDENTITIES), preview=lambda args: (None, None, ""),
            save_identity=lambda args, name: "")
        with gr.Blocks(title="W+ panel test") as self.demo:
            self.panel = wpanel.build(lambda name: PREFIX + name, directions, IDENTITIES,
                                      catalog.AdapterChoices([catalog.DEFAULT_ADAPTER], catalog.DEFAULT_ADAPTER),
                                      callbacks)
            run = gr.Button("Generate", elem_id="generate")
            out = gr.Textbox(label="calls", elem_id="calls")
            run.click(self.record, inputs=self.panel.inputs, outputs=[out])

    def record(self, *values):
        with self.lock:
            self.calls.append(list(values))
            return f"calls: {len(self.calls)}"


@pytest.fixture(scope="module")
def app():
    app = App()
    port = free_port()
    if int(gr.__version__.split(".")[0]) >= 4:
        app.demo.queue()
    app.demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    show_error=True)
    app.url = f"http://127.0.0.1:{port}/"
    try:
        yield app
    finally:
        app.demo.close()


@pytest.fixture(scope="module")
def page(app):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 2400})
            page.set_default_timeout(TIMEOUT_MS)
            page.add_init_script(WEBUI_SHIM + (ROOT / "javascript" / "wplus.js").read_text())  # as the WebUI does
            page.goto(app.url)
            page.wait_for_selector(f"#{PREFIX}source", state="attached")
            page.get_by_text(wpanel.TITLE, exact=True).click()  # open the panel (closed while W+ is off)
            page.wait_for_selector(f"#{PREFIX}source")
            page.wait_for_selector(f"#{PREFIX}scale[data-wplus-decorated]")
            yield page
        finally:
            browser.close()


def control(page, name: str):
    return page.locator(f"#{PREFIX}{name}")


def generate(page, app) -> list:
    """Click Generate and return the args the script got."""
    before = len(app.calls)
    page.click("#generate")
    page.wait_for_function(
        f"() => Array.from(document.querySelectorAll('#calls textarea')).some(t => t.value === 'calls: {before + 1}')")
    return app.calls[-1]


def arg(values: list, name: str):
    return values[FIXED_FIELDS.index(name)]


def choose_source(page, source: Source) -> None:
    control(page, "source").get_by_label(str(source), exact=True).check()


def test_the_panels_defaults_reach_the_script_in_positional_order(page, app):
    values = generate(page, app)
    assert len(values) == len(app.panel.inputs) == len(FIXED_FIELDS) + len(app.panel.direction_names)
    assert arg(values, "enabled") is False and arg(values, "source") == str(Source.PHOTO)
    assert arg(values, "reference") is None and arg(values, "identity") in (None, "")
    assert arg(values, "face_index") == -1 and arg(values, "scale") == 1.0 and arg(values, "start") == 20.0
    args = from_values(values, app.panel.direction_names)
    assert args == PanelArgs(adapter=catalog.DEFAULT_ADAPTER, edits={n: 0.0 for n in app.panel.direction_names})


def test_photos_uploaded_in_the_browser_reach_the_script(page, app):
    control(page, "reference").locator("input[type=file]").set_input_files(str(PHOTO))
    control(page, "reference").locator("img").first.wait_for()
    page.get_by_text(wpanel.MORE_PHOTOS_TITLE, exact=True).click()  # open the accordion
    files = control(page, "more_references")
    files.locator("input[type=file]").set_input_files([str(p) for p in MORE])
    sync_api.expect(files.locator(".file-preview tr")).to_have_count(len(MORE), timeout=TIMEOUT_MS)  # uploaded
    control(page, "enabled").locator("input[type=checkbox]").check()
    values = generate(page, app)

    photo = arg(values, "reference")
    assert isinstance(photo, Image.Image) and photo.size == Image.open(PHOTO).size
    more = reference_list(arg(values, "more_references"))  # what the session encodes
    assert len(more) == len(MORE)
    assert sorted(Image.open(io.BytesIO(b)).size for b in more) == sorted(Image.open(p).size for p in MORE)
    args = from_values(values, app.panel.direction_names)
    assert args.enabled is True and args.source == Source.PHOTO and args.face_index == -1


def test_face_index_is_shown_for_a_photo_only(page, app):
    face = control(page, "face_index")
    assert face.is_visible() and "largest" in face.inner_text()
    choose_source(page, Source.SAVED)
    face.wait_for(state="hidden")
    control(page, "identity").wait_for(state="visible")
    assert arg(generate(page, app), "source") == str(Source.SAVED)
    choose_source(page, Source.SEED)
    control(page, "seed").wait_for(state="visible")
    assert not face.is_visible() and not control(page, "identity").is_visible()
    choose_source(page, Source.PHOTO)
    face.wait_for(state="visible")
    values = generate(page, app)
    assert arg(values, "source") == str(Source.PHOTO) and isinstance(arg(values, "reference"), Image.Image)


def test_double_click_on_the_label_resets_lambda(page, app):
    scale = control(page, "scale")
    number = scale.locator("input[type=number]")
    number.fill("1.5")
    number.press("Enter")
    number.blur()
    values = generate(page, app)
    assert arg(values, "scale") == 1.5
    scale.locator("label, span").first.dblclick()
    page.wait_for_function(f"() => document.querySelector('#{PREFIX}scale input[type=range]').value === '1'")
    values = generate(page, app)
    assert arg(values, "scale") == OPTION["scale"].default == 1.0
    assert from_values(values, app.panel.direction_names).scale == 1.0


def test_hints_are_on_the_controls(page):
    assert control(page, "face_index").locator("label, span").first.get_attribute("title") == OPTION["face_index"].hint


def test_adetailer_group_is_hidden_without_adetailer(page):
    assert control(page, "ad_accordion").count() == 0 or not control(page, "ad_accordion").is_visible()
    assert not control(page, "ad_enabled").is_visible()
