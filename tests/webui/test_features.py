"""Infotext round trip, X/Y/Z axes, the API's alwayson_scripts dict, reference photos (real dlib
face detection + a tiny real-architecture e4e), preview/save, and missing/auto-downloaded weights:
all through the real script in the WebUI stand-in."""
from __future__ import annotations

import base64
import io
import urllib.request

import pytest
import torch
from PIL import Image

from helpers.gradio3 import needs_gradio
from helpers.tiny_e4e import TinyE4E
from webui_stub.fixture import FIX, WebUI, hooks_on, identity_code, installed, kept_settings, make_models_dir

needs_gradio()  # the WebUI stand-in builds the panel with gradio 3

PERSON1 = dict(enabled=True, source="Saved identity", identity="person1")


class SeededTinyE4E(TinyE4E):
    encodes = 0

    def encode(self, images):
        SeededTinyE4E.encodes += 1
        return super().encode(images)

    def map_seed(self, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(seed))
        return 0.5 * torch.randn(1, 18, 512, generator=g)


@pytest.fixture(scope="module")
def env(tmp_path_factory, shared_dir):
    root = tmp_path_factory.mktemp("wplus_webui_features")
    with installed(root / "webui"):
        web = WebUI(make_models_dir(root / "models", directions=True))
        from wplus.generation.resolve import IdentityResolver

        tiny = SeededTinyE4E()
        mod = web.script_module
        mod.EXTENSION.resolver_factory = lambda settings: IdentityResolver(settings, e4e_loader=lambda: tiny,
                                                                           encoder_tag="tiny")
        mod.EXTENSION.resolvers.clear()
        yield web


@pytest.fixture(autouse=True)
def clean(env):
    from modules import shared

    with kept_settings():
        yield
    shared.state.reset()
    assert hooks_on(env.unet) == 0


def plain(env, **kwargs):
    from modules import txt2img

    p = env.processing(**kwargs)
    p.scripts = None
    return txt2img.run(p)


def expected_code(edits=None, mix=None):
    from webui_stub.fixture import SHARED
    from wplus.stylegan import directions

    w = identity_code(1)
    if mix is not None:
        w = directions.mix(w, identity_code(2), mix)
    if edits:
        lib = directions.DirectionLibrary.from_folders(SHARED / "data" / "official" / "w_direction")
        w = directions.apply_edits(w, edits, lib)
    return w


# --- infotext -------------------------------------------------------------------------------------


def test_infotext_round_trip_restores_the_panel(env):
    from modules import infotext_utils

    from wplus.generation.record import code_hash
    from wplus.webui.options import PanelArgs, from_values

    request = PanelArgs(**PERSON1, scale=0.75, start=30.0, edits={"smile": 1.5, "latent/age": -1.0},
                        source2="Saved identity", identity2="person2", mix_mode="Per layer group",
                        mix_coarse=0.2, mix_middle=0.5, mix_fine=0.8, adapter="wplus_adapter.bin")
    script = env.script()
    assert {"smile", "latent/age"} <= set(script.direction_names)
    from wplus.webui.options import to_values

    res, p = env.generate(raw=to_values(request, script.direction_names))
    text = res.infotexts[0]
    assert not p.comments, p.comments
    params = infotext_utils.parse_generation_parameters(text)
    assert params["Wplus identity"] == "person1" and params["Wplus lambda"] == "0.75"
    assert params["Wplus start"] == "30" and params["Wplus mix"] == "person2@0.2/0.5/0.8"
    want = expected_code({"smile": 1.5, "latent/age": -1.0}, {"coarse": 0.2, "middle": 0.5, "fine": 0.8})
    assert params["Wplus identity hash"] == code_hash(want)

    runner = env.runners["txt2img"]
    values = infotext_utils.paste(runner.infotext_fields, text)
    by_component = {id(c): v for (c, _), v in zip(runner.infotext_fields, values)}
    current = [by_component.get(id(c)) for c in script.controls]
    restored = from_values([v if v is not None else c.value for v, c in zip(current, script.controls)],
                           script.direction_names)
    for name in ("enabled", "source", "identity", "scale", "start", "source2", "identity2", "mix_mode",
                 "mix_coarse", "mix_middle", "mix_fine", "adapter"):
        want = getattr(request, name)
        assert getattr(restored, name) == (pytest.approx(want) if isinstance(want, float) else want), name
    assert restored.active_edits() == request.active_edits()

    # pasting an infotext made without W+ turns the panel off and leaves the rest alone
    values = infotext_utils.paste(runner.infotext_fields, plain(env).infotexts[0])
    enabled_index = [id(c) for c, _ in runner.infotext_fields].index(id(script.controls[0]))
    assert values[enabled_index] is False
    assert all(v is None for i, v in enumerate(values) if i != enabled_index)


# --- X/Y/Z ----------------------------------------------------------------------------------------


def test_xyz_axes_are_registered_and_apply_their_values(env):
    from wplus.generation.record import code_hash

    xyz = env.module("xyz_grid.py")
    labels = [o.label for o in xyz.axis_options]
    for label in ("[W+] Identity strength (λ)", "[W+] Start at step (%)", "[W+] Identity", "[W+] Adapter",
                  "[W+] Edit smile", "[W+] Edit latent/age"):
        assert labels.count(label) == 1, label
    from modules import script_callbacks

    script_callbacks.before_ui_callback()  # a second UI build (reload) adds nothing twice
    assert [o.label for o in xyz.axis_options] == labels

    p = env.processing(wplus=dict(PERSON1))
    cells = xyz.run_axis(p, "[W+] Identity strength (λ)", ["0", "0.5"])
    assert torch.equal(cells[0][1].images[0], plain(env).images[0])
    assert "Wplus lambda: 0.5" in cells[1][1].infotexts[0]
    assert not hasattr(p, "wplus_xyz")  # each cell's copy got its own values

    off = env.processing(wplus=dict(enabled=False))
    cells = xyz.run_axis(off, "[W+] Identity", ["person1", "person2"])
    hashes = [c[1].infotexts[0].split("Wplus identity hash: ")[1].split(",")[0] for c in cells]
    assert hashes == [code_hash(identity_code(1)), code_hash(identity_code(2))]
    with pytest.raises(RuntimeError, match="nobody"):
        xyz.run_axis(off, "[W+] Identity", ["nobody"])
    with pytest.raises(RuntimeError, match="outside"):
        xyz.run_axis(p, "[W+] Identity strength (λ)", ["9"])

    cells = xyz.run_axis(p, "[W+] Edit smile", ["0", "2"])
    assert "Wplus edits" not in cells[0][1].infotexts[0]
    assert "Wplus edits: smile=2" in cells[1][1].infotexts[0]
    assert f"Wplus identity hash: {code_hash(expected_code({'smile': 2.0}))}" in cells[1][1].infotexts[0]
    # xyz_grid's cells are shallow copies sharing one params dict: a later cell must not inherit
    # an earlier cell's W+ entries (found running the real WebUI).
    cells = xyz.run_axis(p, "[W+] Edit smile", ["2", "0"])
    assert "Wplus edits: smile=2" in cells[0][1].infotexts[0]
    assert "Wplus edits" not in cells[1][1].infotexts[0]
    cells = xyz.run_axis(p, "[W+] Start at step (%)", ["0", "60"])
    assert "Wplus start: 60" in cells[1][1].infotexts[0]
    assert not torch.equal(cells[0][1].images[0], cells[1][1].images[0])


# --- API --------------------------------------------------------------------------------------------


def api_args(env, payload, tab="txt2img"):
    """script_args as the WebUI's API builds them: UI defaults, then `args` written from args_from."""
    runner, script = env.runners[tab], env.script(tab)
    values = runner.default_args()
    for i, value in enumerate(payload[: script.args_to - script.args_from]):
        values[script.args_from + i] = value
    return tuple(values)


def run_api(env, payload, **kwargs):
    from modules import txt2img

    p = env.processing(**kwargs)
    p.is_api = True
    p.script_args = api_args(env, payload)
    return txt2img.run(p), p


def png_b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_api_dict_with_saved_identity(env):
    res, p = run_api(env, [{"identity": "person1", "scale": 0.6, "start": 0, "edits": {"smile": 1}}])
    text = res.infotexts[0]
    assert not p.comments, p.comments
    assert "Wplus identity: person1" in text and "Wplus lambda: 0.6" in text and "Wplus edits: smile=1" in text
    # positional args (the older style) still work too
    from wplus.webui.options import PanelArgs, to_values

    res2, _ = run_api(env, to_values(PanelArgs(**PERSON1, scale=0.6, start=0, edits={"smile": 1.0}),
                                     env.script().direction_names))
    assert torch.equal(res.images[0], res2.images[0])


def test_api_bad_dict_warns_and_generates_plain(env):
    import json

    res, p = run_api(env, [{"identity": "person1", "scale": "high"}])
    assert any("'scale' must be a number" in c for c in p.comments), p.comments
    info = json.loads(res.js())  # what the API returns as `info`: no comments, but the parameters
    assert "'scale' must be a number" in info["extra_generation_params"]["Wplus warning"]
    assert "Wplus warning" in res.infotexts[0]
    assert torch.equal(res.images[0], plain(env).images[0])
    res, p = run_api(env, [{"identty": "person1"}])
    assert any("unknown key" in c for c in p.comments)


def test_api_reference_photo_base64_is_encoded_once(env):
    from skimage import data

    photo = Image.fromarray(data.astronaut())
    before = SeededTinyE4E.encodes
    res, p = run_api(env, [{"reference": "data:image/png;base64," + png_b64(photo), "face_index": -1}])
    assert not p.comments, p.comments
    assert "Wplus identity: photo" in res.infotexts[0]
    assert SeededTinyE4E.encodes == before + 1
    res2, _ = run_api(env, [{"reference": png_b64(photo)}])  # same pixels: served from the cache
    assert SeededTinyE4E.encodes == before + 1
    assert torch.equal(res.images[0], res2.images[0])

    res3, p3 = run_api(env, [{"reference": "bm90IGFuIGltYWdl"}])  # base64 of "not an image"
    assert any("not a readable image" in c for c in p3.comments), p3.comments
    blank = png_b64(Image.new("RGB", (256, 256), (200, 200, 200)))
    res4, p4 = run_api(env, [{"reference": blank}])
    assert any("face" in c.lower() for c in p4.comments), p4.comments
    assert "Wplus lambda" not in res4.infotexts[0]


def test_seed_identity_and_mix_in_panel(env):
    res, p = env.generate(wplus=dict(enabled=True, source="Random (seed)", seed=7, source2="Saved identity",
                                     identity2="person2", mix=0.25))
    assert not p.comments, p.comments
    assert "Wplus identity: seed 7" in res.infotexts[0] and "Wplus mix: person2@0.25" in res.infotexts[0]


# --- preview / save ---------------------------------------------------------------------------------


def test_preview_and_save_identity(env):
    from wplus.generation.record import code_hash
    from wplus.webui import catalog
    from wplus.webui.options import PanelArgs

    mod = env.script_module
    aligned, rendering, status = mod.EXTENSION.preview(PanelArgs(**PERSON1, edits={"smile": 2.0}))
    assert isinstance(rendering, Image.Image) and rendering.size == (1024, 1024)
    assert code_hash(expected_code({"smile": 2.0})) in status
    assert "type a name" in mod.EXTENSION.save_identity(PanelArgs(**PERSON1), "  ")
    msg = mod.EXTENSION.save_identity(PanelArgs(**PERSON1, edits={"smile": 2.0}), "smiling person")
    assert "Saved identity" in msg
    names = catalog.list_identities(mod.current_settings().models_dir)
    saved = next(n for n in names if "smiling" in n)
    res, _ = env.generate(wplus=dict(enabled=True, source="Saved identity", identity=saved))
    assert f"Wplus identity hash: {code_hash(expected_code({'smile': 2.0}))}" in res.infotexts[0]
    _, _, status = mod.EXTENSION.preview(PanelArgs(enabled=True, source="Photo"))
    assert "no reference photo" in status


# --- weights ----------------------------------------------------------------------------------------


def test_missing_adapter_without_download_says_what_to_place_where(env, tmp_path, monkeypatch):
    from modules import shared

    empty = make_models_dir(tmp_path / "models", adapter=False)
    shared.opts.wplus_models_dir = str(empty)
    env.script_module.EXTENSION.resolvers.clear()
    monkeypatch.setattr(env.script_module, "EXT_MODELS", tmp_path / "no_ext_models")
    monkeypatch.setattr(env.script_module.EXTENSION, "ext_models", tmp_path / "no_ext_models")
    res, p = env.generate(wplus=dict(PERSON1))
    msg = " ".join(p.comments)
    assert "wplus_adapter.bin" in msg and "github.com/csxmli2016/w-plus-adapter" in msg and str(empty) in msg
    assert torch.equal(res.images[0], plain(env).images[0])


class _FakeResponse(io.BytesIO):
    status = 200

    def __init__(self, data: bytes):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}

    def getcode(self):
        return 200


def test_auto_download_fetches_the_adapter_on_first_use(env, tmp_path, monkeypatch):
    from modules import shared

    monkeypatch.delenv("WPLUS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    empty = make_models_dir(tmp_path / "models", adapter=False)
    shared.opts.wplus_models_dir = str(empty)
    shared.opts.wplus_auto_download = True
    env.script_module.EXTENSION.resolvers.clear()
    monkeypatch.setattr(env.script_module, "EXT_MODELS", tmp_path / "no_ext_models")
    monkeypatch.setattr(env.script_module.EXTENSION, "ext_models", tmp_path / "no_ext_models")
    payload = (FIX / "wplus_adapter.bin").read_bytes()
    urls = []

    def fake_urlopen(request, timeout=None):
        urls.append(request.full_url)
        return _FakeResponse(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    res, p = env.generate(wplus=dict(PERSON1))
    assert not p.comments, p.comments
    assert urls == ["https://github.com/csxmli2016/w-plus-adapter/releases/download/v1/wplus_adapter.bin"]
    assert (empty / "wplus_adapter.bin").read_bytes() == payload
    assert "Wplus adapter: wplus_adapter.bin" in res.infotexts[0]
    res2, _ = env.generate(wplus=dict(PERSON1))  # present now: no second download
    assert len(urls) == 1 and torch.equal(res.images[0], res2.images[0])


def test_api_info_route_lists_what_the_dict_accepts(env):
    info = env.module("wplus_api.py").info()
    assert "identity" in info["args_keys"] and "wplus_adapter.bin" in info["adapters"]
    assert {"person1", "person2"} <= set(info["identities"])
    assert any(d["name"] == "smile" for d in info["directions"])
    routes = []

    class App:
        def add_api_route(self, path, fn, methods):
            routes.append((path, fn, methods))

    from modules import script_callbacks

    script_callbacks.app_started_callback(None, App())
    assert routes and routes[0][0] == "/wplus/v1/info" and routes[0][2] == ["GET"]


def test_several_photos_panel_upload_and_api_list_give_one_mean_identity(env, tmp_path):
    """The panel's extra uploads (gradio File objects: a temp file path in `.name`) and the API's
    reference list: one identity, the mean W+ of the photos, each photo encoded once; saving it
    records every photo."""
    import types

    from skimage import data

    from wplus.generation.record import code_hash
    from wplus.identity.files import identities_dir, load_identity
    from wplus.webui.options import PanelArgs

    mod = env.script_module
    photo = Image.fromarray(data.astronaut())
    flipped = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    path = tmp_path / "flipped.png"
    flipped.save(path)
    one = mod.EXTENSION.resolver().resolve(PanelArgs(enabled=True, reference=photo)).wplus
    two = mod.EXTENSION.resolver().resolve(PanelArgs(enabled=True, reference=flipped)).wplus
    before = SeededTinyE4E.encodes
    upload = types.SimpleNamespace(name=str(path))  # what gradio 3.41's File(type="file") hands over
    both = mod.EXTENSION.resolver().resolve(PanelArgs(enabled=True, reference=photo, more_references=[upload]))
    assert SeededTinyE4E.encodes == before  # both photos from the cache
    torch.testing.assert_close(both.wplus, (one + two) / 2)
    res, p = run_api(env, [{"reference": [png_b64(photo), png_b64(flipped)]}])
    assert not p.comments, p.comments
    assert f"Wplus identity hash: {code_hash(both.wplus)}" in res.infotexts[0]
    msg = mod.EXTENSION.save_identity(PanelArgs(enabled=True, reference=photo, more_references=[upload]), "two photos")
    assert "Saved identity" in msg
    saved = load_identity("two photos", identities_dir(mod.current_settings().models_dir))
    assert len(saved.sources) == 2 and saved.source == "webui, mean of 2 photos"
