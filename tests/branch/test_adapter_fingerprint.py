"""The adapter fingerprint (`Wplus adapter hash`): from the weights, not the file's bytes, so it is the
same for every write of the same weights (safetensors writes its metadata in a random order), for the
official .bin and our .safetensors of the same weights, and changes with any weight, dtype or family."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import wplus
from conftest import ROOT
from helpers.malformed import ADAPTER_CASES, raw_safetensors, safetensors_state, tiny_adapter
from wplus.assets.fingerprint import sha256_file
from wplus.branch.files import adapter_fingerprint
from wplus.errors import AdapterFormatError


def _written(path, meta_order, extra: dict | None = None, change=None):
    """Our safetensors layout written byte by byte with the metadata keys in the given order."""
    tensors, meta = safetensors_state()
    if change:
        change(tensors)
    header, payload, offset = {"__metadata__": {k: meta[k] for k in meta_order} | (extra or {})}, b"", 0
    for key, t in tensors.items():
        raw = t.numpy().tobytes()
        header[key] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        payload += raw
        offset += len(raw)
    return raw_safetensors(path, header, payload)


def test_same_weights_other_metadata_order_same_fingerprint(tmp_path):
    order = list(safetensors_state()[1])
    a = _written(tmp_path / "a.safetensors", order)
    b = _written(tmp_path / "b.safetensors", order[::-1])
    assert sha256_file(a) != sha256_file(b)  # the bytes differ...
    assert adapter_fingerprint(a) == adapter_fingerprint(b)  # ...the weights do not
    assert len(adapter_fingerprint(a)) == 64 and int(adapter_fingerprint(a), 16) >= 0
    # a note that does not change what loads does not change the fingerprint either
    c = _written(tmp_path / "c.safetensors", order, extra={"note": "trained on my photos"})
    assert adapter_fingerprint(c) == adapter_fingerprint(a)


def test_two_processes_writing_the_same_adapter_agree(tmp_path):
    """save_adapter in two fresh interpreters (safetensors orders its metadata at random per process)."""
    code = ("import sys; sys.path[:0] = [sys.argv[2], sys.argv[3]]; import wplus; "
            "from helpers.malformed import tiny_adapter; wplus.save_adapter(tiny_adapter(), sys.argv[1])")
    for name in ("p1.safetensors", "p2.safetensors"):
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path / name), str(ROOT), str(ROOT / "tests")],
                           capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert r.returncode == 0, r.stderr
    assert adapter_fingerprint(tmp_path / "p1.safetensors") == adapter_fingerprint(tmp_path / "p2.safetensors")


def test_bin_and_safetensors_of_the_same_weights_agree_other_dtype_differs(tmp_path):
    adapter = tiny_adapter()
    ours = wplus.save_adapter(adapter, tmp_path / "a.safetensors")
    official = wplus.save_adapter(adapter, tmp_path / "a.bin", official=True)
    half = wplus.save_adapter(adapter, tmp_path / "h.safetensors", dtype=torch.float16)
    half_bin = wplus.save_adapter(adapter, tmp_path / "h.bin", official=True, dtype=torch.float16)
    assert adapter_fingerprint(ours) == adapter_fingerprint(official)
    assert adapter_fingerprint(half) == adapter_fingerprint(half_bin) != adapter_fingerprint(ours)


def test_any_weight_or_the_family_changes_it(tmp_path):
    order = list(safetensors_state()[1])
    base = adapter_fingerprint(_written(tmp_path / "a.safetensors", order))

    def nudge(tensors):
        tensors["layers.1.to_v_wplus.weight"][3, 2] += 1e-6

    assert adapter_fingerprint(_written(tmp_path / "b.safetensors", order, change=nudge)) != base
    sd1 = _written(tmp_path / "c.safetensors", [k for k in order if k != "arch"], extra={"arch": "sd1"})
    assert adapter_fingerprint(sd1) != base


def test_cached_per_file_version(tmp_path, monkeypatch):
    path = wplus.save_adapter(tiny_adapter(), tmp_path / "a.safetensors")
    first = adapter_fingerprint(path)
    from wplus.branch import files

    calls = []
    real = files._read
    monkeypatch.setattr(files, "_read", lambda p: calls.append(p) or real(p))
    assert adapter_fingerprint(path) == first and calls == []  # same file version: from the cache
    other = tiny_adapter()
    with torch.no_grad():
        other.proj.norm.bias.add_(1.0)
    wplus.save_adapter(other, path)
    os.utime(path, ns=(1, 1))  # another version even on a file system with coarse timestamps
    assert adapter_fingerprint(path) != first and len(calls) == 1


@pytest.mark.parametrize("case", ["nan_weight_bin", "code_pickle", "wrong_projection_width"])
def test_malformed_files_are_refused_as_when_loading(tmp_path, case):
    make, pattern = ADAPTER_CASES[case]
    with pytest.raises(AdapterFormatError, match=pattern):
        adapter_fingerprint(make(tmp_path))


def test_the_session_helpers_use_it(tmp_path):
    """The WebUI's adapter cache records the fingerprint, not the file's sha256."""
    from wplus.generation.adapters import load_adapter_cached

    order = list(safetensors_state()[1])
    a = _written(tmp_path / "a.safetensors", order)
    b = _written(tmp_path / "b.safetensors", order[::-1])
    assert load_adapter_cached(a)[1] == load_adapter_cached(b)[1] == adapter_fingerprint(a)[:10]
