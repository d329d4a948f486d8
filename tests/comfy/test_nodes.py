"""The W+ nodes as ComfyUI loads and runs them (the stand-in, tests/comfy_stub): registration, the
three nodes' exact inputs, model folders by name only, a sampling run, the identity nodes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from comfy_stub.fixture import STUB_DIR

from conftest import OFFICIAL, ROOT

REQUIRED = {
    "WPlusAdapterLoader": {"adapter_name"},
    "WPlusIdentityLoader": {"identity"},
    "WPlusApply": {"model", "adapter", "identity", "weight", "start_at", "end_at"},
}
HEAVY = ("dlib", "diffusers", "transformers", "wplus.faces", "wplus.stylegan.e4e", "wplus.pipeline.score")
LOAD = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("custom_nodes.sd-webui-wplus", {str(ROOT / "__init__.py")!r},
                                              submodule_search_locations=[{str(ROOT)!r}])
pack = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = pack
spec.loader.exec_module(pack)
fp = sys.modules.get("folder_paths")
print(json.dumps({{"nodes": sorted(pack.NODE_CLASS_MAPPINGS), "names": pack.NODE_DISPLAY_NAME_MAPPINGS,
                  "heavy": [m for m in {HEAVY!r} if m in sys.modules], "wplus": "wplus" in sys.modules,
                  "folders": {{k: fp.get_folder_paths(k) for k in ("wplus", "wplus_identities")}} if fp else None}}))
"""


def _load_as_comfyui(tmp_path, with_comfyui: bool) -> dict:
    """Import the checkout's root __init__.py as ComfyUI does: by file, under a path-made name, the
    checkout not on sys.path (a fresh interpreter)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if with_comfyui:
        env["PYTHONPATH"] = str(STUB_DIR)
    out = subprocess.run([sys.executable, "-c", LOAD], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_comfyui_loads_the_checkout_as_a_node_pack_without_heavy_imports(tmp_path):
    got = _load_as_comfyui(tmp_path, with_comfyui=True)
    assert set(REQUIRED) <= set(got["nodes"]) and len(got["nodes"]) == 10
    assert set(got["names"]) == set(got["nodes"])
    assert got["heavy"] == []
    models = tmp_path / "models" / "wplus"
    assert got["folders"]["wplus"][0] == str(models)
    assert got["folders"]["wplus_identities"][0] == str(models / "identities")


def test_outside_comfyui_the_root_package_gives_no_nodes_and_imports_nothing(tmp_path):
    got = _load_as_comfyui(tmp_path, with_comfyui=False)
    assert got == {"nodes": [], "names": {}, "heavy": [], "wplus": False, "folders": None}


def test_the_three_nodes_have_exactly_these_inputs(comfy):
    from wplus.comfy.nodes import NODE_CLASS_MAPPINGS

    for name, inputs in REQUIRED.items():
        spec = NODE_CLASS_MAPPINGS[name].INPUT_TYPES()
        assert set(spec["required"]) == inputs, name
    apply = NODE_CLASS_MAPPINGS["WPlusApply"]
    spec = apply.INPUT_TYPES()
    assert spec["optional"] == {"attn_mask": ("MASK", spec["optional"]["attn_mask"][1])}
    assert [spec["required"][k][0] for k in ("model", "adapter", "identity", "weight")] == \
        ["MODEL", "WPLUS_ADAPTER", "WPLUS_IDENTITY", "FLOAT"]
    assert apply.RETURN_TYPES == ("MODEL",) and {c.CATEGORY for c in NODE_CLASS_MAPPINGS.values()} == {"W+ Adapter"}


def test_adapter_list_holds_adapters_only(comfy, tmp_path):
    from wplus.comfy import files, nodes

    folder = tmp_path / "models" / "wplus"
    for rel in ("a.safetensors", "b.bin", "identities/alice.safetensors", "e4e_ffhq_encode.pt", "w_direction/x.pt"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(b"x")
    assert files.adapter_names() == ["a.safetensors", "b.bin"]
    assert nodes.WPlusAdapterLoader.INPUT_TYPES()["required"]["adapter_name"][0] == ["a.safetensors", "b.bin"]
    with pytest.raises(Exception, match="no adapter called '../b.bin'"):
        nodes.WPlusAdapterLoader().load("../b.bin")


@pytest.mark.parametrize("name", ["../1", "/etc/passwd", "identities/1", ""])
def test_identity_names_never_paths(comfy, name):
    from wplus.comfy.nodes import WPlusIdentityLoader
    from wplus.errors import WPlusError

    with pytest.raises(WPlusError):
        WPlusIdentityLoader().load(name)


@pytest.mark.needs_shared
def test_apply_node_changes_sampling_and_weight_zero_does_not(patcher, tmp_path):
    from comfy.samplers import sample

    from wplus.comfy import nodes

    identities = tmp_path / "models" / "wplus" / "identities"
    identities.mkdir(parents=True)
    shutil.copy(OFFICIAL / "test_data" / "e4e" / "1.pth", identities / "1.pth")
    assert nodes.WPlusIdentityLoader.INPUT_TYPES()["required"]["identity"][0] == ["1"]
    (adapter,) = nodes.WPlusAdapterLoader().load("wplus_adapter.bin")
    (identity,) = nodes.WPlusIdentityLoader().load("1")
    io = patcher.model.reference.io
    cond, uncond = io["text_cond"][:1], io["text_uncond"][:1]
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))

    def image(model):
        return sample(model, noise, cond, uncond, steps=5)

    plain = image(patcher)
    (model,) = nodes.WPlusApply().apply(patcher, adapter, identity, 1.0, 0.2, 1.0)
    assert not torch.allclose(image(model), plain, atol=1e-4)
    (zero,) = nodes.WPlusApply().apply(patcher, adapter, identity, 0.0, 0.2, 1.0)
    assert torch.equal(image(zero), plain)
    assert torch.equal(image(patcher), plain)  # a plain run after the W+ ones


class _SeededTinyE4E:
    """tests/helpers' tiny e4e plus the mapping of a seed (E4E.map_seed's contract)."""

    def __new__(cls):
        from helpers.tiny_e4e import TinyE4E

        e4e = TinyE4E()

        def map_seed(seed, truncation=0.7):
            z = torch.randn(1, 512, generator=torch.Generator().manual_seed(int(seed)))
            with torch.no_grad():
                w = e4e.generator.mapping(z)[:, None].expand(-1, 18, -1)
            return e4e.latent_avg + truncation * (w - e4e.latent_avg)

        e4e.map_seed = map_seed
        return e4e


@pytest.fixture
def tiny_e4e(comfy, monkeypatch):
    from wplus.comfy import nodes

    monkeypatch.setattr(nodes, "_e4e_loader", lambda: _SeededTinyE4E)


def test_seed_mix_save_load_and_preview(tiny_e4e):
    from wplus.comfy import files, nodes

    (a,) = nodes.WPlusIdentityFromSeed().make(1, 0.7)
    (b,) = nodes.WPlusIdentityFromSeed().make(2, 0.7)
    assert a.wplus.shape == (18, 512) and not torch.equal(a.wplus, b.wplus)
    mixer = nodes.WPlusMixIdentities()
    assert torch.equal(mixer.mix(a, b, "global", 0.0, 1, 1, 1)[0].wplus, a.wplus)
    assert torch.equal(mixer.mix(a, b, "global", 1.0, 0, 0, 0)[0].wplus, b.wplus)
    (coarse,) = mixer.mix(a, b, "per layer group", 0.3, 1.0, 0.0, 0.0)
    assert torch.equal(coarse.wplus[:4], b.wplus[:4]) and torch.equal(coarse.wplus[4:], a.wplus[4:])
    out = nodes.WPlusSaveIdentity().save(coarse, "mixed one")
    assert out == {"ui": {"text": ["saved mixed one"]}} and files.identity_names() == ["mixed one"]
    assert torch.equal(nodes.WPlusIdentityLoader().load("mixed one")[0].wplus, coarse.wplus)
    (preview,) = nodes.WPlusPreview().render(a, "256")
    assert preview.shape == (1, 256, 256, 3) and 0 <= preview.min() and preview.max() <= 1


@pytest.mark.needs_shared
def test_edit_node_applies_sliders_and_named_directions(comfy, tmp_path):
    from wplus.comfy import nodes
    from wplus.identity.files import load_identity
    from wplus.stylegan.directions import DirectionLibrary, apply_edits

    shutil.copytree(OFFICIAL / "w_direction", tmp_path / "models" / "wplus" / "w_direction")
    person = load_identity(OFFICIAL / "test_data" / "e4e" / "1.pth")
    sliders = {name: 0.0 for name in nodes.COMMON_EDITS}
    assert nodes.WPlusEditIdentity().edit(person, "", **sliders)[0] is person
    (edited,) = nodes.WPlusEditIdentity().edit(person, "lipstick=1.5", **{**sliders, "smile": 2.0})
    library = DirectionLibrary.from_folders(tmp_path / "models" / "wplus" / "w_direction", tmp_path / "none")
    expected = apply_edits(person.wplus, {"smile": 2.0, "lipstick": 1.5}, library)
    torch.testing.assert_close(edited.wplus, expected)
    assert edited.edits == "smile=2; lipstick=1.5" and torch.equal(edited.wplus_unedited, person.wplus)


@pytest.mark.needs_shared
def test_identity_from_images_and_the_score(tiny_e4e):
    from PIL import Image

    from wplus.comfy import nodes
    from wplus.comfy.images import from_pil

    photos = [Image.open(OFFICIAL / "test_data" / "e4e" / f"{n}.png").convert("RGB").resize((256, 256)) for n in (1, 2)]
    (one, face) = nodes.WPlusIdentityFromImage().encode(from_pil(photos[:1]), -1)
    (both, _) = nodes.WPlusIdentityFromImage().encode(from_pil(photos), -1)
    assert face.shape == (1, 256, 256, 3) and one.face_index == 0
    assert both.source == "mean of 2 photos" and not torch.equal(both.wplus, one.wplus)
    result = nodes.WPlusIdentityScore().score(from_pil(photos), one)
    similarity, labels = result["result"]
    assert len(similarity) == 2 and similarity[0] > similarity[1] and similarity[0] > 0.9
    assert "same person" in labels[0] and result["ui"]["text"] == labels
