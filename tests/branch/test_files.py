"""Adapter files: official .bin, our .safetensors, conversion both ways, clear errors on bad files."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import wplus
from conftest import ROOT
from helpers.unet_fixtures import identity_tokens, ldm_unet
from wplus.errors import AdapterFormatError


@pytest.fixture(scope="module")
def ref(shared_dir):
    return ldm_unet("sd15")


def _eps(ref, adapter, scale=1.0):
    with torch.no_grad(), wplus.attach(ref.unet, adapter) as handle:
        handle.tokens = identity_tokens(adapter, ref.io)
        handle.scale = scale
        return ref.run(ref.context)


def test_round_trip_bin_safetensors_bin_same_outputs(ref, tmp_path):
    official = wplus.load_adapter(ref.adapter_path)
    ours = tmp_path / "a.safetensors"
    wplus.save_adapter(official, ours)
    with safe_open(str(ours), "pt") as f:
        meta = f.metadata()
    assert meta == {"format": "wplus-adapter", "format_version": "1", "arch": "custom",
                    "context_dim": "32", "num_layers": "16", "num_tokens": "4"}
    again = tmp_path / "b.bin"
    wplus.save_adapter(wplus.load_adapter(ours), again, official=True)
    back = torch.load(again, weights_only=True)
    orig = torch.load(ref.adapter_path, weights_only=True)
    assert back.keys() == orig.keys()
    for part in orig:
        assert back[part].keys() == orig[part].keys()
        for k in orig[part]:
            assert torch.equal(back[part][k], orig[part][k])
    expected = _eps(ref, official)
    assert torch.equal(_eps(ref, wplus.load_adapter(ours)), expected)
    assert torch.equal(_eps(ref, wplus.load_adapter(again)), expected)


def test_convert_cli_half(ref, tmp_path):
    out = tmp_path / "half.safetensors"
    proc = subprocess.run([sys.executable, "-m", "wplus.branch.convert", str(ref.adapter_path), str(out), "--half"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "16 cross-attention layers" in proc.stdout
    with safe_open(str(out), "pt") as f:
        assert f.get_tensor("proj.proj_0.weight").dtype == torch.float16
    torch.testing.assert_close(_eps(ref, wplus.load_adapter(out)), ref.io["eps_scale_1.0"], atol=2e-3, rtol=0)
    bad = subprocess.run([sys.executable, "-m", "wplus.branch.convert", str(tmp_path / "missing.bin"), str(out)],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "not found" in bad.stderr


def test_truncated_bin_is_reported_as_corrupt(ref, tmp_path):
    broken = tmp_path / "wplus_adapter.bin"
    broken.write_bytes(ref.adapter_path.read_bytes()[:5000])
    with pytest.raises(AdapterFormatError, match="corrupt or incomplete download"):
        wplus.load_adapter(broken)


def test_truncated_safetensors_is_reported(ref, tmp_path):
    good = tmp_path / "good.safetensors"
    wplus.save_adapter(wplus.load_adapter(ref.adapter_path), good)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(AdapterFormatError, match="corrupt or truncated"):
        wplus.load_adapter(broken)


def test_other_model_files_are_named(tmp_path):
    ip = tmp_path / "ip-adapter.bin"
    torch.save({"image_proj": {"w": torch.zeros(2)}, "ip_adapter": {}}, ip)
    with pytest.raises(AdapterFormatError, match="IP-Adapter"):
        wplus.load_adapter(ip)
    sd = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, str(sd))
    with pytest.raises(AdapterFormatError, match="Stable Diffusion checkpoint"):
        wplus.load_adapter(sd)
    notdict = tmp_path / "list.bin"
    torch.save([torch.zeros(1)], notdict)
    with pytest.raises(AdapterFormatError, match="list"):
        wplus.load_adapter(notdict)


def test_unknown_keys_and_bad_shapes(ref, tmp_path):
    state = torch.load(ref.adapter_path, weights_only=True)
    state["wplus_adapter"]["1.to_out_wplus.weight"] = torch.zeros(1)
    path = tmp_path / "x.bin"
    torch.save(state, path)
    with pytest.raises(AdapterFormatError, match="unknown key 'wplus_adapter.1.to_out_wplus.weight'"):
        wplus.load_adapter(path)
    state = torch.load(ref.adapter_path, weights_only=True)
    state["wplus_adapter"]["3.to_k_wplus.weight"] = torch.zeros(32, 17)
    torch.save(state, path)
    with pytest.raises(AdapterFormatError, match="layer 1 has shapes"):
        wplus.load_adapter(path)
    state = torch.load(ref.adapter_path, weights_only=True)
    del state["wplus_adapter"]["5.to_v_wplus.weight"]
    torch.save(state, path)
    with pytest.raises(AdapterFormatError, match="incomplete residual attention weights"):
        wplus.load_adapter(path)


def test_pickle_with_code_is_refused(tmp_path):
    """weights_only=True: a pickle that would run code is rejected, not executed."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps({"w_proj": Evil(), "wplus_adapter": {}}))
    with pytest.raises(AdapterFormatError, match="refused: it is not plain weights"):
        wplus.load_adapter(path)


def test_newer_format_version_asks_for_update(ref, tmp_path):
    adapter = wplus.load_adapter(ref.adapter_path)
    path = tmp_path / "v9.safetensors"
    wplus.save_adapter(adapter, path)
    from safetensors.torch import load_file
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    meta["format_version"] = "9"
    save_file(load_file(str(path)), str(path), metadata=meta)
    with pytest.raises(AdapterFormatError, match="Update the extension"):
        wplus.load_adapter(path)


def test_loads_while_the_webui_has_replaced_torch_load(ref, monkeypatch):
    """WebUI 1.10's modules/safe.py swaps torch.load for a checker that returns None on current archives."""
    monkeypatch.setattr(torch, "load", lambda *a, **k: None)
    adapter = wplus.load_adapter(ref.adapter_path)
    torch.testing.assert_close(_eps(ref, adapter), ref.io["eps_scale_1.0"], atol=1e-4, rtol=0)
