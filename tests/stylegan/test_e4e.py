"""e4e encoder + StyleGAN2 generator: fixture parity with the paper's code, file formats, bad files.

The full-size model is filled once per module by the fixture's deterministic rule (tests/e4e_fill.py)
and shared; everything about file handling uses a tiny model of the same architecture family.
"""
from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

import wplus
from conftest import FIXTURES
from helpers.e4e_fill import filled_checkpoint, filled_state_dict, load_manifest, manifest_of
from wplus.errors import E4EFormatError, MissingWeightsError
from wplus.stylegan import e4e as e4e_mod
from wplus.stylegan.e4e import load_e4e, save_e4e_safetensors
from wplus.stylegan.encoder import Encoder4Editing, EncoderConfig
from wplus.stylegan.generator import Generator, GeneratorConfig

E4E_DIR = FIXTURES / "e4e"
# the full-size passes need torch only (pinned alike in every test environment): run once (dev/test.sh)
STACK_INDEPENDENT = pytest.mark.stack_independent


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def manifest(shared_dir):
    return load_manifest(E4E_DIR / "e4e_manifest.json")


@pytest.fixture(scope="module")
def io(shared_dir):
    from safetensors.torch import load_file
    return load_file(str(E4E_DIR / "e4e_io.safetensors"))


@pytest.fixture(scope="module")
def official(manifest):
    """The official checkpoint layout, full size, filled by the fixture's rule (~1 GB)."""
    return filled_checkpoint(manifest)


@pytest.fixture(scope="module")
def model(official):
    return load_e4e(official)


@pytest.fixture(scope="module")
def encoded(model, io):
    """The one full-size encoder pass of the session."""
    return model.encode(io["input"])


@pytest.fixture(scope="module")
def rendered(model, io):
    """The one 1024^2 generator pass of the session."""
    return model.render(io["wplus"][:1])


TINY_GEN = GeneratorConfig(size=32, style_dim=32, n_mlp=2, channels=(32, 32, 16, 16))
TINY_ENC = EncoderConfig(style_count=8, style_dim=32, widths=(16, 24, 32, 48), units=(1, 2, 1, 1))


def tiny_checkpoint(opts=None) -> dict:
    """Official layout, tiny shapes (IR-SE body and 8 style blocks; 32 px generator)."""
    m = manifest_of({"encoder": Encoder4Editing(TINY_ENC), "decoder": Generator(TINY_GEN)})
    return {"state_dict": filled_state_dict(m["state_dict"], m["prelu_keys"]),
            "latent_avg": 0.1 * torch.randn(8, 32, generator=torch.Generator().manual_seed(1)),
            "opts": opts or {"encoder_type": "Encoder4Editing", "stylegan_size": 32}}


@pytest.fixture()
def images():
    return torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(3)) * 2 - 1


# ----------------------------------------------------------------------------- parity (full size)

def test_public_api_exports_load_e4e():
    assert wplus.load_e4e is e4e_mod.load_e4e


def test_module_keys_equal_official_keys(model, manifest):
    keys = {e["key"] for e in manifest["state_dict"]}
    assert {f"encoder.{k}" for k in model.encoder.state_dict()} | \
           {f"decoder.{k}" for k in model.generator.state_dict()} == keys
    assert (model.n_latent, model.style_dim, model.size) == (18, 512, 1024)


@STACK_INDEPENDENT
def test_encoder_matches_fixture(model, encoded, io):
    assert encoded.shape == (2, 18, 512) and encoded.dtype == torch.float32
    assert torch.equal(model.latent_avg, io["latent_avg"])
    assert rel_err(encoded - model.latent_avg, io["encoder_codes"]) < 1e-4
    assert rel_err(encoded, io["wplus"]) < 1e-4


@STACK_INDEPENDENT
def test_generator_matches_fixture(rendered, io):
    assert rendered.shape == (1, 3, 1024, 1024)
    assert rel_err(F.interpolate(rendered, size=(64, 64), mode="area"), io["decoder_image_64"]) < 1e-4
    assert rel_err(rendered[:, :, 480:544, 480:544], io["decoder_image_center"]) < 1e-4


@STACK_INDEPENDENT
def test_mapping_matches_fixture(model, io):
    assert rel_err(model.mapping(io["z"]), io["mapping_w"]) < 1e-4


@STACK_INDEPENDENT
def test_map_seed_is_deterministic_and_truncates_to_average(model):
    w = model.map_seed(7, truncation=1.0)
    assert w.shape == (1, 18, 512)
    assert torch.equal(w, model.map_seed(7, truncation=1.0))
    assert not torch.allclose(w, model.map_seed(8, truncation=1.0))
    z = torch.randn(512, generator=torch.Generator().manual_seed(7))[None]
    assert torch.allclose(w[:, 5], model.mapping(z), atol=1e-6)
    assert torch.allclose(model.map_seed(7, truncation=0.0), model.latent_avg[None])
    half = model.map_seed([7, 8], truncation=0.5)
    assert half.shape == (2, 18, 512)
    assert torch.allclose(half[:1], model.latent_avg + 0.5 * (w - model.latent_avg), atol=1e-6)


def test_safetensors_conversion_round_trips_full_size(official, model, io, tmp_path):
    out = save_e4e_safetensors(official, tmp_path / "e4e.safetensors")
    converted = load_e4e(out)
    assert converted.opts["encoder_type"] == "Encoder4Editing"
    for part, ref in (("encoder", model.encoder), ("decoder", model.generator)):
        got = (converted.encoder if part == "encoder" else converted.generator).state_dict()
        for k, v in ref.state_dict().items():
            assert torch.equal(got[k], v), f"{part}.{k}"
    assert torch.equal(converted.latent_avg, model.latent_avg)
    assert torch.equal(converted.mapping(io["z"]), model.mapping(io["z"]))  # outputs: tiny tests below
    converted.release()


# ----------------------------------------------------------------------------- tiny model: files

def test_official_pt_file_loads_with_weights_only(tmp_path, images):
    ckpt = tiny_checkpoint()
    path = tmp_path / "e4e_tiny.pt"
    torch.save(ckpt, path)
    legacy = tmp_path / "e4e_legacy.pt"  # pre-1.6 torch.save format: no mmap, still weights_only
    torch.save(ckpt, legacy, _use_new_zipfile_serialization=False)
    from_file, from_dict = load_e4e(path), load_e4e(ckpt)
    assert (from_file.n_latent, from_file.style_dim, from_file.size) == (8, 32, 32)
    w = from_dict.encode(images)
    assert torch.equal(from_file.encode(images), w)
    assert torch.equal(load_e4e(legacy).encode(images), w)
    assert torch.equal(from_file.render(w), from_dict.render(w))


def test_pt_to_safetensors_round_trip_and_cli(tmp_path, images, capsys):
    ckpt = tiny_checkpoint()
    pt, st = tmp_path / "e4e.pt", tmp_path / "e4e.safetensors"
    torch.save(ckpt, pt)
    assert e4e_mod.main(["convert", str(pt), str(st)]) == 0
    assert not (tmp_path / "e4e.safetensors.part").exists()
    a, b = load_e4e(pt), load_e4e(st)
    w = a.encode(images)
    assert torch.equal(w, b.encode(images))
    assert torch.equal(a.render(w), b.render(w))
    assert torch.equal(a.latent_avg, b.latent_avg)
    assert e4e_mod.main(["info", str(st)]) == 0
    assert "W+ 8x32" in capsys.readouterr().out


def test_modules_load_on_demand_and_release(tmp_path, images):
    st = save_e4e_safetensors(tiny_checkpoint(), tmp_path / "e4e.safetensors")
    model = load_e4e(st)
    assert "loaded: nothing" in repr(model)
    w = model.encode(images)
    assert "loaded: encoder" in repr(model)
    img = model.render(w)
    model.release("encoder")
    assert "loaded: decoder" in repr(model)
    model.release()
    assert "loaded: nothing" in repr(model)
    with model:  # reloaded from the file on use, released on exit
        assert torch.equal(model.encode(images), w)
        assert torch.equal(model.render(w), img)
    assert "loaded: nothing" in repr(model)


def test_batched_render_equals_single_renders():
    model = load_e4e(tiny_checkpoint())
    w = model.map_seed([1, 2, 3], truncation=0.8)
    w[1, 4:] += 0.3  # per-layer differences too
    both = model.render(w, batch_size=3)
    assert both.shape == (3, 3, 32, 32)
    for i in range(3):
        assert torch.allclose(both[i:i + 1], model.render(w[i:i + 1]), atol=1e-5)
    assert not torch.allclose(both[0], both[1])


def test_random_noise_differs_from_fixed_noise():
    model = load_e4e(tiny_checkpoint())
    w = model.map_seed(3)
    fixed = model.render(w)
    assert torch.equal(fixed, model.render(w))
    assert not torch.equal(fixed, model.render(w, randomize_noise=True))


# ----------------------------------------------------------------------------- bad files / inputs

def test_missing_file_names_path_and_url(tmp_path):
    with pytest.raises(MissingWeightsError, match="e4e_ffhq_encode.pt"):
        load_e4e(tmp_path / "nope.pt")


def test_missing_key_is_reported():
    ckpt = tiny_checkpoint()
    del ckpt["state_dict"]["encoder.styles.5.linear.weight"]
    with pytest.raises(E4EFormatError, match=r"1 missing \(encoder\.styles\.5\.linear\.weight\)"):
        load_e4e(ckpt)


def test_wrong_shape_is_reported():
    ckpt = tiny_checkpoint()
    ckpt["state_dict"]["decoder.convs.1.conv.weight"] = torch.zeros(1, 32, 16, 3, 3)
    with pytest.raises(E4EFormatError, match="wrong shape.*decoder.convs.1.conv.weight"):
        load_e4e(ckpt)


def test_mixed_encoder_and_generator_rejected():
    ckpt = tiny_checkpoint()
    big = manifest_of({"decoder": Generator(GeneratorConfig(size=64, style_dim=32, n_mlp=2,
                                                            channels=(32, 32, 16, 16, 16)))})
    sd = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("encoder.")}
    sd.update(filled_state_dict(big["state_dict"]))
    with pytest.raises(E4EFormatError, match="different models"):
        load_e4e({"state_dict": sd, "latent_avg": torch.zeros(10, 32)})


def test_missing_latent_avg_rejected():
    ckpt = tiny_checkpoint()
    del ckpt["latent_avg"]
    with pytest.raises(E4EFormatError, match="latent_avg"):
        load_e4e(ckpt)


@pytest.mark.parametrize("name", ["reference_sd15/wplus_adapter.bin", "reference_sd15/unet_ldm.safetensors"])
def test_file_of_another_model_rejected(shared_dir, name):
    with pytest.raises(E4EFormatError, match="not an e4e checkpoint"):
        load_e4e(FIXTURES / name)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_file_rejected(tmp_path, suffix):
    path = tmp_path / f"e4e{suffix}"
    if suffix == ".pt":
        torch.save(tiny_checkpoint(), path)
    else:
        save_e4e_safetensors(tiny_checkpoint(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(E4EFormatError, match="truncated"):
        load_e4e(path)


def test_non_weights_files_rejected(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"GIF89a not a checkpoint at all" * 10)
    with pytest.raises(E4EFormatError, match="corrupt"):
        load_e4e(junk)
    code = tmp_path / "code.pt"
    code.write_bytes(pickle.dumps({"state_dict": {}, "fn": print}, protocol=2))
    with pytest.raises(E4EFormatError, match="not plain weights"):
        load_e4e(code)


def test_bad_inputs_raise_clear_errors():
    model = load_e4e(tiny_checkpoint())
    with pytest.raises(ValueError, match="256"):
        model.encode(torch.zeros(1, 3, 128, 128))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        model.encode(torch.full((1, 3, 256, 256), 200.0))
    with pytest.raises(ValueError, match=r"\(B, 8, 32\)"):
        model.render(torch.zeros(1, 18, 512))


def test_image_helpers_round_trip():
    import numpy as np
    rgb = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    x = e4e_mod.to_input(rgb)
    assert x.shape == (1, 3, 256, 256) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(np.asarray(e4e_mod.to_pil(x)[0]), rgb)
    assert e4e_mod.to_input(e4e_mod.to_pil(x)[0].resize((512, 512))).shape == (1, 3, 256, 256)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(images):
    ckpt = tiny_checkpoint()
    cpu, gpu = load_e4e(ckpt), load_e4e(ckpt, device="cuda")
    w = cpu.encode(images)
    w_gpu = gpu.encode(images.cuda())
    assert w_gpu.device.type == "cuda"
    assert torch.allclose(w_gpu.cpu(), w, atol=1e-4)
    assert torch.allclose(gpu.render(w).cpu(), cpu.render(w), atol=1e-3)
    half = load_e4e(ckpt).to("cuda", torch.float16)
    assert torch.allclose(half.encode(images).cpu(), w, atol=5e-2)
