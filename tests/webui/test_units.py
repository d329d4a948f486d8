"""Host-agnostic pieces of the extension: CFG row layout, delayed start, API dict, infotext keys
(checked against the WebUI's infotext grammar), panel value order."""
from __future__ import annotations

import base64
import io
import re

import pytest
import torch
from PIL import Image

from wplus.branch import rows
from wplus.errors import ImageInputError, WPlusError
from wplus.generation.photos import decode_photo
from wplus.webui import api as api_args
from wplus.webui import infotext
from wplus.webui.options import FIXED_FIELDS, PanelArgs, apply_xyz, from_values, to_values

# The WebUI's infotext grammar (modules/infotext_utils.py, v1.10): `Key: value` pairs.
WEBUI_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def test_row_index_cond_first_then_zero():
    assert rows.cfg_row_index(6, 4).tolist() == [0, 0, 0, 0, 1, 1]  # AND prompts: 4 cond rows, 2 uncond
    assert rows.cfg_row_index(6, 2).tolist() == [0, 0, 1, 1, 1, 1]  # instruct-pix2pix: cond, 2 uncond blocks
    assert rows.cfg_row_index(3, 3).tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        rows.cfg_row_index(2, 3)
    assert rows.batch_rows({"crossattn": torch.zeros(3, 77, 8), "vector": torch.zeros(3, 4)}) == 3


def test_api_dict_parses_and_rejects_bad_values():
    args = api_args.parse({"identity": "alice", "lambda": 0.7, "start": 10, "edits": {"smile": 2},
                           "mix_with": {"seed": 3}, "mix": [0, 0.5, 1], "adapter": "a.safetensors"})
    assert (args.enabled, args.source, args.identity, args.scale, args.start) == \
        (True, "Saved identity", "alice", 0.7, 10.0)
    assert (args.source2, args.seed2, args.mix_mode, args.mix_weights()) == \
        ("Random (seed)", 3, "Per layer group", (0.0, 0.5, 1.0))
    assert args.edits == {"smile": 2.0} and args.adapter == "a.safetensors"
    assert api_args.parse({"enabled": False}).enabled is False
    bad = [
        ({"identity": "a", "reference": "b"}, "only one of"),
        ({"scale": 5}, "between 0 and 4"),
        ({"scale": True}, "must be a number"),
        ({"scale": 1, "lambda": 1}, "not both"),
        ({"start": 120}, "between 0 and 100"),
        ({"face_index": -2}, ">= -1"),
        ({"face_index": 1.5}, "integer"),
        ({"edits": ["smile"]}, "must be a dict"),
        ({"mix": 0.5}, "needs 'mix_with'"),
        ({"mix_with": {}, "mix": 0.5}, "needs one of"),
        ({"mix_with": {"identity": "b"}, "mix": [1, 2]}, "3 weights"),
        ({"enabled": "yes"}, "true or false"),
        ({"refrence": "x"}, "unknown key"),
    ]
    for payload, message in bad:
        with pytest.raises(WPlusError, match=re.escape(message)):
            api_args.parse(payload)


def test_decode_image_forms():
    img = Image.new("RGB", (8, 8), (10, 20, 30))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    for value in (b64, "data:image/png;base64," + b64, buf.getvalue(), img):
        assert decode_photo(value).image.getpixel((0, 0)) == (10, 20, 30)
    with pytest.raises(ImageInputError, match="base64"):
        decode_photo("not base64!")
    with pytest.raises(ImageInputError, match="not a readable image"):
        decode_photo(base64.b64encode(b"hello").decode())


def test_infotext_keys_survive_the_webui_grammar():
    info = infotext.GenerationInfo(identity_label="Ann, the 2nd", identity_hash="0123456789", scale=0.75, start=20,
                                   adapter_name="wplus_adapter.bin", adapter_hash="abcdef0123",
                                   edits={"smile": 1.5, "latent/age": -2, "glasses": 0},
                                   mix_label="seed 4", mix_weights=(0.1, 0.2, 0.3))
    params = infotext.params(info)
    # quote like the WebUI: JSON when the value holds ',' ':' or a newline
    import json

    text = ", ".join(f"{k}: {json.dumps(v) if any(c in str(v) for c in ',:') else v}" for k, v in
                     {"Steps": 20, **params}.items())
    parsed = {k: json.loads(v) if v.startswith('"') else v for k, v in WEBUI_PARAM.findall(text)}
    face_pass = {infotext.K_AD, infotext.K_AD_LAMBDA, infotext.K_AD_IDENTITIES}  # written by the face pass
    assert set(infotext.ALL_KEYS) - {infotext.K_FACE} - face_pass == set(params)
    for key, value in params.items():
        assert parsed[key] == str(value), key
    panel = infotext.panel_from_params(parsed, ["smile", "latent/age", "glasses"])
    assert (panel.source, panel.identity, panel.scale, panel.start) == ("Saved identity", "Ann, the 2nd", 0.75, 20.0)
    assert panel.edits == {"smile": 1.5, "latent/age": -2.0, "glasses": 0.0}
    assert (panel.source2, panel.seed2, panel.mix_weights()) == ("Random (seed)", 4, (0.1, 0.2, 0.3))
    assert infotext.panel_from_params({"Steps": "20"}, ["smile"]) is None
    assert WEBUI_PARAM.findall("W+ lambda: 1")[0][0] == "lambda"  # why the keys say "Wplus", not "W+"


def test_panel_values_round_trip_and_xyz_overrides():
    names = ["smile", "age"]
    args = PanelArgs(enabled=True, source="Photo", face_index=2, scale=1.2, edits={"smile": 1.0, "age": 0.0})
    values = to_values(args, names)
    assert len(values) == len(FIXED_FIELDS) + 2
    assert from_values(values, names) == args
    gradio_like = list(values)
    gradio_like[FIXED_FIELDS.index("face_index")] = 2.0  # gr.Number hands back floats
    gradio_like[FIXED_FIELDS.index("identity")] = None  # an empty dropdown
    back = from_values(gradio_like, names)
    assert back.face_index == 2 and back.identity == ""
    with pytest.raises(ValueError):
        from_values(values[:3], names)
    xyz = apply_xyz(PanelArgs(), {"scale": 0.5, "identity": "bob", "edit:age": -1})
    assert (xyz.enabled, xyz.scale, xyz.source, xyz.identity, xyz.edits) == \
        (True, 0.5, "Saved identity", "bob", {"age": -1.0})
    with pytest.raises(ValueError):
        apply_xyz(PanelArgs(), {"nope": 1})


def test_one_row_mapper_two_layouts():
    # AUTOMATIC1111: cond rows first; Forge: each call's chunks in cond_or_uncond (0 cond, 1 uncond)
    assert rows.chunk_rows([(True, 2), (False, 1)]) == (0, 0, 1)
    assert rows.forge_call_rows(4, {"transformer_options": {"cond_or_uncond": [1, 0]}}) == (1, 1, 0, 0)
    assert rows.forge_call_rows(6, {"transformer_options": {"cond_or_uncond": [1, 0, 0]}}) == (1, 1, 0, 0, 0, 0)
    assert rows.forge_call_rows(2, {"transformer_options": {"cond_or_uncond": [0]}}) == (0, 0)
    for bad in ({}, {"transformer_options": {}}, {"transformer_options": {"cond_or_uncond": []}}):
        with pytest.raises(WPlusError, match="cond_or_uncond"):
            rows.forge_call_rows(2, bad)
    with pytest.raises(WPlusError, match="equal"):
        rows.forge_call_rows(3, {"transformer_options": {"cond_or_uncond": [1, 0]}})


def test_forge_model_is_recognised_by_its_forge_objects():
    import types

    from wplus.webui import forge
    from wplus.webui.session import unet_of

    unet = torch.nn.Module()
    unet.input_blocks = torch.nn.ModuleList()
    patcher = types.SimpleNamespace(model=types.SimpleNamespace(diffusion_model=unet, computation_dtype=torch.float16),
                                    load_device=torch.device("cpu"))
    forge_model = types.SimpleNamespace(forge_objects=types.SimpleNamespace(unet=patcher))
    a1111_model = types.SimpleNamespace(model=types.SimpleNamespace(diffusion_model=unet))
    assert forge.is_forge(forge_model) and not forge.is_forge(a1111_model)
    assert unet_of(forge_model) is unet and unet_of(a1111_model) is unet
    patcher.model.diffusion_model = torch.nn.Linear(1, 1)  # Forge's Flux/SD3: a transformer, no UNet blocks
    assert forge.is_forge(forge_model) and unet_of(forge_model) is None
    options = forge.session_options(forge_model)
    assert options["rows_per_call"] is rows.forge_call_rows and options["follow_dtype"]
    assert options["dtype"] == torch.float16
