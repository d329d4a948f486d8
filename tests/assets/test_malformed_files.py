"""Malformed adapter, e4e and identity files: each is refused with a clear error before anything is
built, or (for odd but valid files) loads correctly. The corpus is written at test time
(tests/helpers/malformed.py); nothing here needs ../shared, so it runs on every stack."""
from __future__ import annotations

import pickle

import pytest
import torch

import wplus
from helpers.malformed import (
    ADAPTER_CASES,
    E4E_CASES,
    E4E_GOOD_CASES,
    E4E_USE_CASES,
    IDENTITY_CASES,
    IDENTITY_GOOD_CASES,
    identity_code,
    official_state,
    safetensors_state,
    tiny_adapter,
    tiny_e4e_checkpoint,
)
from wplus.assets import io
from wplus.branch import files as adapter_files
from wplus.errors import AdapterFormatError, E4EFormatError, IdentityFormatError, WPlusError
from wplus.identity import load_identity
from wplus.stylegan.e4e import load_e4e


def _no_unpickle_advice(exc: BaseException) -> None:
    text = str(exc)
    assert "weights_only" not in text and "WEIGHTS_ONLY" not in text, text


@pytest.mark.parametrize("case", sorted(ADAPTER_CASES))
def test_malformed_adapter_file_is_refused(tmp_path, case, monkeypatch):
    make, pattern = ADAPTER_CASES[case]
    path = make(tmp_path)
    built = []
    monkeypatch.setattr(adapter_files, "WPlusAdapter", lambda *a, **k: built.append(a))
    with pytest.raises(AdapterFormatError, match=pattern) as info:
        wplus.load_adapter(path)
    assert built == []  # refused before any module was built
    _no_unpickle_advice(info.value)


def test_stride0_view_is_refused_without_allocating(tmp_path):
    make, _ = ADAPTER_CASES["stride0_view_40000"]
    path = make(tmp_path)
    assert path.stat().st_size < 1_000_000  # the file "of" 6.4 GB is small
    with pytest.raises(AdapterFormatError, match="40000"):
        wplus.load_adapter(path)


@pytest.mark.parametrize("name", ["adapter.bin", "adapter.pt", "adapter"])
def test_safetensors_adapter_under_any_name_loads(tmp_path, name):
    src = tiny_adapter()
    path = wplus.save_adapter(src, tmp_path / "a.safetensors")
    renamed = path.rename(tmp_path / name)
    loaded = wplus.load_adapter(renamed)
    for (k, a), (_, b) in zip(sorted(src.state_dict().items()), sorted(loaded.state_dict().items())):
        assert torch.equal(a, b), k


def test_pickled_adapter_named_safetensors_loads(tmp_path):
    path = tmp_path / "official.safetensors"
    torch.save(official_state(), path)
    assert torch.equal(wplus.load_adapter(path).proj.norm.bias, tiny_adapter().proj.norm.bias)


def test_valid_adapter_files_still_load(tmp_path):
    tensors, meta = safetensors_state()
    from safetensors.torch import save_file
    save_file(tensors, str(tmp_path / "a.safetensors"), metadata=meta)
    torch.save(official_state(), tmp_path / "a.bin")
    a, b = wplus.load_adapter(tmp_path / "a.safetensors"), wplus.load_adapter(tmp_path / "a.bin")
    assert torch.equal(a.layers[1].to_v_wplus.weight, b.layers[1].to_v_wplus.weight)


@pytest.mark.parametrize("case", sorted(E4E_CASES))
def test_malformed_e4e_file_is_refused(tmp_path, case):
    make, pattern = E4E_CASES[case]
    with pytest.raises(E4EFormatError, match=pattern) as info:
        load_e4e(make(tmp_path))
    _no_unpickle_advice(info.value)


@pytest.mark.parametrize("case", sorted(E4E_USE_CASES))
def test_e4e_weights_are_checked_before_the_model_is_built(tmp_path, case):
    make, pattern = E4E_USE_CASES[case]
    model = load_e4e(make(tmp_path))
    with pytest.raises(E4EFormatError, match=pattern):
        model.load()
    assert model._modules == {"encoder": None, "decoder": None}


@pytest.mark.parametrize("case", sorted(E4E_GOOD_CASES))
def test_odd_but_valid_e4e_files_load(tmp_path, case):
    model = load_e4e(E4E_GOOD_CASES[case](tmp_path))
    reference = load_e4e(tiny_e4e_checkpoint())
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert isinstance(model.opts, dict)
    assert torch.allclose(model.encode(x), reference.encode(x), atol=1e-6)


def test_e4e_dict_sources_are_checked_like_files():
    ckpt = tiny_e4e_checkpoint()
    ckpt["latent_avg"] = torch.full((8, 32), float("inf"))
    with pytest.raises(E4EFormatError, match="latent_avg' holds NaN or infinite"):
        load_e4e(ckpt)
    ckpt = tiny_e4e_checkpoint()
    ckpt["state_dict"]["decoder.style.1.weight"] = ckpt["state_dict"]["decoder.style.1.weight"].bool()
    with pytest.raises(E4EFormatError, match="holds bool values"):
        load_e4e(ckpt)


@pytest.mark.parametrize("case", sorted(IDENTITY_CASES))
def test_malformed_identity_file_is_refused(tmp_path, case):
    make, pattern = IDENTITY_CASES[case]
    with pytest.raises(IdentityFormatError, match=pattern) as info:
        load_identity(make(tmp_path))
    _no_unpickle_advice(info.value)


@pytest.mark.parametrize("case", sorted(IDENTITY_GOOD_CASES))
def test_odd_but_valid_identity_files_load(tmp_path, case):
    identity = load_identity(IDENTITY_GOOD_CASES[case](tmp_path))
    assert torch.equal(identity.wplus, identity_code())
    assert identity.face_index is None
    assert identity.faces == []


def test_identity_face_index_is_read_when_well_formed(tmp_path):
    from helpers.malformed import _identity_st
    assert load_identity(_identity_st({"face_index": "-1"})(tmp_path)).face_index == -1
    assert load_identity(_identity_st({"face_index": "3"}, name="b.safetensors")(tmp_path)).face_index == 3


def test_identity_by_long_name_is_a_clear_error(tmp_path):
    with pytest.raises(WPlusError, match="too long"):
        load_identity("y" * 5000, folder=tmp_path)


# --- the one safe-load helper ------------------------------------------------------------------


def test_pickle_refusal_names_the_object_and_never_suggests_unpickling(tmp_path):
    path = tmp_path / "model.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {}, "hook": print}, f, protocol=2)
    with pytest.raises(WPlusError, match=r"is refused: it is not plain weights \(it names the Python object "
                                         r"(builtins\.)?print\)") as info:
        io.load_pickle(path, "checkpoint")
    _no_unpickle_advice(info.value)


def test_sniff_tells_formats_apart_by_content(tmp_path):
    torch.save({"a": torch.ones(2)}, tmp_path / "z.safetensors")
    wplus.save_adapter(tiny_adapter(), tmp_path / "s.bin")
    with open(tmp_path / "legacy.bin", "wb") as f:
        torch.save({"a": torch.ones(2)}, f, _use_new_zipfile_serialization=False)
    (tmp_path / "junk.pt").write_bytes(b"GIF89a" + b"\0" * 64)
    assert io.sniff(tmp_path / "z.safetensors") == io.ZIP_PICKLE
    assert io.sniff(tmp_path / "s.bin") == io.SAFETENSORS
    assert io.sniff(tmp_path / "legacy.bin") == io.LEGACY_PICKLE
    assert io.sniff(tmp_path / "junk.pt") == io.UNKNOWN
    assert torch.equal(io.load_pickle(tmp_path / "legacy.bin")["a"], torch.ones(2))


def test_check_weights_accepts_plain_weights_and_shared_storage():
    base = torch.randn(4, 6)
    state = {"a": base, "b": base[1:3], "c": base.t(), "d": torch.zeros(0, 5)}
    assert io.check_weights(state, "x") == state


def test_every_loader_refuses_long_paths_clearly(tmp_path):
    from wplus.faces import facexlib_backend  # noqa: F401  (imports fine without facexlib)
    long = tmp_path / ("z" * 5000)
    for load, error in ((wplus.load_adapter, AdapterFormatError), (load_e4e, E4EFormatError),
                        (load_identity, IdentityFormatError), (io.load_pickle, WPlusError)):
        with pytest.raises(error, match="too long"):
            load(long)
