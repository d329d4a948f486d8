"""Identity files, the official N.pth codes, the content-hash cache and encoding a real photo."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from conftest import OFFICIAL  # noqa: E402
from helpers.tiny_e4e import TinyE4E
from wplus.errors import (
    FaceNotFoundError,
    IdentityFormatError,
    IdentityNotFoundError,
    ImageInputError,
    MissingWeightsError,
    WPlusError,
)
from wplus.identity.cache import IdentityCache, cache_key
from wplus.identity.encoder import IdentityEncoder, encode_reference
from wplus.identity.files import Identity, list_identities, load_identity, safe_name, save_identity


def _identity(seed: int = 0, **kw) -> Identity:
    g = torch.Generator().manual_seed(seed)
    thumb = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (256, 256, 3), dtype=np.uint8))
    return Identity(wplus=torch.randn(18, 512, generator=g), thumbnail=thumb, **kw)


def test_save_load_roundtrip(tmp_path):
    ident = _identity(name="Alice", image_hash="ab" * 32, backend="dlib", face_index=1,
                      faces=[{"index": 0, "box": [1.0, 2.0, 3.0, 4.0]}, {"index": 1, "box": [5.0, 6.0, 9.0, 9.0]}])
    path = save_identity(ident, folder=tmp_path)
    assert path == tmp_path / "Alice.safetensors" and not list(tmp_path.glob("*.tmp"))
    back = load_identity("Alice", folder=tmp_path)
    assert torch.equal(back.wplus, ident.wplus) and back.wplus.dtype == torch.float32
    assert (back.name, back.image_hash, back.backend, back.face_index) == ("Alice", "ab" * 32, "dlib", 1)
    assert back.faces == ident.faces and back.created == ident.created
    assert np.array_equal(np.asarray(back.thumbnail), np.asarray(ident.thumbnail))
    assert back.batch().shape == (1, 18, 512)
    assert load_identity(path).name == "Alice"  # by path too
    assert list_identities(tmp_path) == ["Alice"]


@pytest.mark.needs_shared
def test_official_pth_loads_as_identity(tmp_path):
    src = OFFICIAL / "test_data/e4e/3.pth"
    expected = torch.load(src, map_location="cpu", weights_only=True).detach()[0]
    ident = load_identity(src)
    assert torch.equal(ident.wplus, expected) and ident.name == "3" and not ident.wplus.requires_grad
    (tmp_path / "3.pth").write_bytes(src.read_bytes())
    assert torch.equal(load_identity("3", folder=tmp_path).wplus, expected)  # by name from the folder


def test_bad_files_and_names(tmp_path):
    save_identity(_identity(), "bob", folder=tmp_path)
    with pytest.raises(IdentityNotFoundError, match=r"No identity called 'carol'.*Saved identities: bob.*invert"):
        load_identity("carol", folder=tmp_path)
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(IdentityFormatError, match="broken.safetensors"):
        load_identity("broken", folder=tmp_path)
    torch.save(torch.zeros(1, 14, 512), tmp_path / "short.pth")
    with pytest.raises(IdentityFormatError, match=r"\(18,512\).*\(1, 14, 512\)"):
        load_identity("short", folder=tmp_path)
    save_file({"other": torch.zeros(2), "more": torch.zeros(3)}, str(tmp_path / "nowplus.safetensors"))
    with pytest.raises(IdentityFormatError, match="no 'wplus'"):
        load_identity("nowplus", folder=tmp_path)
    with pytest.raises(IdentityFormatError, match="NaN"):
        Identity(wplus=torch.full((18, 512), float("nan")))
    assert safe_name("../../etc/passwd") == "etc_passwd"
    assert safe_name("Zoë Smith") == "Zoë Smith"
    with pytest.raises(IdentityFormatError):
        safe_name("../")


def test_cache_lru_resize_and_disk(tmp_path):
    cache = IdentityCache(max_items=2, disk_dir=None)
    keys = [cache_key(f"h{i}", None, "dlib") for i in range(3)]
    for i, k in enumerate(keys):
        cache.put(k, _identity(i))
    assert len(cache) == 2 and cache.get(keys[0]) is None  # oldest evicted
    assert cache.get(keys[1]) is not None
    cache.put(keys[0], _identity(0))  # keys[2] is now the least recently used
    assert cache.get(keys[2]) is None
    cache.max_items = 1
    assert len(cache) == 1
    hit = cache.get(keys[0])
    hit.wplus += 1  # callers get copies
    assert torch.equal(cache.get(keys[0]).wplus, _identity(0).wplus)
    # keys: face index, backend and encoder all matter
    assert len({cache_key("h", None, "dlib"), cache_key("h", 0, "dlib"), cache_key("h", None, "facexlib"),
                cache_key("h", None, "dlib", "other-e4e")}) == 4
    disk = IdentityCache(max_items=4, disk_dir=tmp_path / ".cache")
    disk.put(keys[0], _identity(5))
    fresh = IdentityCache(max_items=4, disk_dir=tmp_path / ".cache")  # a new process
    assert torch.equal(fresh.get(keys[0]).wplus, _identity(5).wplus) and fresh.hits == 1
    bounded = IdentityCache(max_items=1, disk_dir=tmp_path / "small", max_disk_items=2)
    for i, k in enumerate(keys):
        bounded.put(k, _identity(i))
    assert len(list((tmp_path / "small").glob("*.safetensors"))) == 2
    (tmp_path / ".cache" / f"{keys[0]}.safetensors").write_bytes(b"junk")
    assert IdentityCache(disk_dir=tmp_path / ".cache").get(keys[0]) is None  # damaged entry = miss


@pytest.fixture(scope="module")
def astronaut_png(tmp_path_factory) -> Path:
    import skimage.data

    path = tmp_path_factory.mktemp("img") / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(path)
    return path


def test_encode_reference_real_photo_once(astronaut_png, tmp_path):
    model = TinyE4E()
    loads = []

    def loader():
        loads.append(1)
        return model

    cache = IdentityCache(max_items=8, disk_dir=tmp_path / ".cache")
    first = encode_reference(astronaut_png, backend="dlib", e4e_loader=loader, cache=cache, encoder_tag="tiny")
    assert model.encode_calls == 1 and model.released  # e4e released after use
    assert first.wplus.shape == (18, 512) and first.backend == "dlib" and first.face_index == 0
    assert len(first.faces) == 1 and first.thumbnail.size == (256, 256)
    # the same pixels given another way (PIL, numpy): never encoded twice
    img = Image.open(astronaut_png)
    again = encode_reference(img, e4e_loader=loader, cache=cache, encoder_tag="tiny")
    explicit = encode_reference(np.asarray(img), face_index=0, e4e_loader=loader, cache=cache, encoder_tag="tiny")
    assert model.encode_calls == 1 and len(loads) == 1
    assert torch.equal(again.wplus, first.wplus) and torch.equal(explicit.wplus, first.wplus)
    assert again.image_hash == first.image_hash
    # e4e's input was the white-background aligned face, in [-1, 1] (TinyE4E asserts the range)
    from wplus.faces.detect import prepare_reference
    from wplus.identity.encoder import image_to_batch

    ref = prepare_reference(img, backend="dlib", size=256)
    torch.testing.assert_close(first.wplus, model.encode(image_to_batch(ref.masked))[0])
    # another encoder (tag) is a miss
    encode_reference(img, e4e_loader=loader, cache=cache, encoder_tag="other")
    assert model.encode_calls == 3


def test_identity_encoder_keeps_or_releases(astronaut_png):
    model = TinyE4E()
    enc = IdentityEncoder(lambda: model, cache=None, keep_loaded=True)
    enc.encode(astronaut_png)
    assert not model.released and enc._e4e is model
    enc.release()
    assert model.released and enc._e4e is None


def test_encode_reference_bad_input(tmp_path):
    model = TinyE4E()
    blank = tmp_path / "blank.png"
    Image.new("RGB", (300, 300), "gray").save(blank)
    with pytest.raises(FaceNotFoundError):
        encode_reference(blank, e4e_loader=lambda: model, cache=IdentityCache())
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageInputError):
        encode_reference(text, e4e_loader=lambda: model, cache=IdentityCache())
    assert model.encode_calls == 0


def test_default_encoder_offline_names_the_e4e_file(astronaut_png, tmp_path, monkeypatch):
    monkeypatch.setenv("WPLUS_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("WPLUS_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match=r"e4e_ffhq_encode.pt.*releases/download/v1/e4e_ffhq_encode.pt"):
        encode_reference(astronaut_png, cache=IdentityCache())


def test_several_photos_give_the_mean_code_each_encoded_once(astronaut_png, tmp_path):
    """Photos of one person -> one identity, the mean of their W+ codes; each photo encoded once
    (cached), every photo recorded in the saved file."""
    from wplus.identity.encoder import mean_identity

    model = TinyE4E()
    enc = IdentityEncoder(lambda: model, cache=IdentityCache(max_items=8), encoder_tag="tiny")
    img = Image.open(astronaut_png).convert("RGB")
    flipped = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)  # the same person, another photo
    a, b = enc.encode(img), enc.encode(flipped)
    assert model.encode_calls == 2 and not torch.equal(a.wplus, b.wplus)
    both = enc.encode_many([img, flipped], name="astro", labels=["a.png", "b.png"])
    assert model.encode_calls == 2  # both from the cache
    torch.testing.assert_close(both.wplus, (a.wplus + b.wplus) / 2)
    assert both.source == "mean of 2 photos" and [s["file"] for s in both.sources] == ["a.png", "b.png"]
    assert [s["image_hash"] for s in both.sources] == [a.image_hash, b.image_hash]
    path = save_identity(both, "astro", folder=tmp_path)
    loaded = load_identity(path)
    assert loaded.sources == both.sources and torch.equal(loaded.wplus, both.wplus)
    assert enc.encode_many([img]).wplus.equal(a.wplus)  # one photo: that photo's code
    with pytest.raises(WPlusError, match="no reference photos"):
        enc.encode_many([])
    with pytest.raises(WPlusError, match="no identities"):
        mean_identity([])
