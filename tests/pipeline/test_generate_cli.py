"""`python -m wplus generate` on a tiny SD model: bad arguments, grids, PNG parameters the WebUI reads,
identity from a photo / a saved file / a seed, edits, mixing, offline messages."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from conftest import OFFICIAL
from helpers.tiny_e4e import TinyE4E
from wplus.cli import main

pytestmark = pytest.mark.needs_shared  # the fixture adapter/UNet, the paper's photos and directions
PHOTO = OFFICIAL / "test_data" / "e4e" / "1.png"


class SeededTinyE4E(TinyE4E):
    def map_seed(self, seed: int, truncation: float = 0.7) -> torch.Tensor:
        z = torch.randn(1, 512, generator=torch.Generator().manual_seed(int(seed)))
        return self.latent_avg + truncation * z[:, None, :].expand(-1, 18, -1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from trainer.tiny import build_tiny_sd, write_tiny_extras

    root = tmp_path_factory.mktemp("gen")
    folder = build_tiny_sd(root / "sd")
    adapter, identity = write_tiny_extras(folder)
    models = root / "models"
    models.mkdir()
    (models / "w_direction").symlink_to(OFFICIAL / "w_direction")
    return folder, adapter, identity, models


def _args(tiny, *extra):
    folder, adapter, identity, models = tiny
    return ["generate", "--model", str(folder), "--adapter", str(adapter), "--prompt", "a photo of a face",
            "--steps", "2", "--models", str(models), "--no-download", *extra]


@pytest.mark.parametrize("extra, message", [
    (["--identity", "x", "--scale", "abc"], "--scale 'abc'"),
    (["--identity", "x", "--start", "150"], "'--start' must be between 0 and 100"),
    (["--identity", "x", "--edit", "smile"], "NAME=STRENGTH"),
    (["--identity", "x", "--edit", "smile=1,2", "--edit", "age=1,2"], "only one --edit"),
    (["--identity", "x", "--face-index", "1"], "--face-index goes with --photo"),
    (["--identity", "x", "--steps", "0"], "--steps must be"),
    (["--identity", "x", "--width", "100"], "multiple of 8"),
    (["--identity", "x", "--mix", "2"], "--mix"),
    (["--identity", "nobody-here"], "No identity called"),
    (["--identity", "x", "--adapter", "missing.bin"], "--adapter missing.bin: no such file"),
    (["--identity", "x", "--model", "./no/such/folder"], "no such folder or file"),
])
def test_bad_arguments_one_line_exit_2(tiny, capsys, extra, message):
    args = _args(tiny, "-o", "x.png")
    for flag in ("--adapter", "--model"):
        if flag in extra:  # the extra one replaces the default
            i = args.index(flag)
            del args[i:i + 2]
    assert main(args + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_offline_hub_model_says_what_to_download(tiny, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    args = _args(tiny, "--identity", str(tiny[2]), "-o", str(tmp_path / "x.png"))
    args[args.index("--model") + 1] = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Missing the base model 'stable-diffusion-v1-5/stable-diffusion-v1-5'" in err
    assert "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5" in err and "--model" in err


def test_missing_adapter_offline_names_file_url_folder(tiny, capsys, tmp_path):
    args = _args(tiny, "--identity", str(tiny[2]), "-o", str(tmp_path / "x.png"))
    i = args.index("--adapter")
    del args[i:i + 2]
    args[args.index("--models") + 1] = str(tmp_path / "empty")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Missing 'wplus_adapter.bin'" in err and "releases/download/v1/wplus_adapter.bin" in err
    assert str(tmp_path / "empty") in err


def test_grid_of_scales_and_edits_with_webui_parameters(tiny, tmp_path, capsys):
    from webui_stub.modules.infotext_utils import parse_generation_parameters  # the WebUI stand-in's parser
    from wplus.webui.infotext import panel_from_params

    out = tmp_path / "grid.png"
    assert main(_args(tiny, "--identity", str(tiny[2]), "--scale", "0,1", "--edit", "smile=-2,2",
                      "--edit", "age=1", "-o", str(out))) == 0
    img = Image.open(out)
    assert img.width > 2 * 64 and img.height > 2 * 64  # 2 × 2 cells plus labels
    params = parse_generation_parameters(img.info["parameters"])
    assert params["Prompt"] == "a photo of a face"
    assert params["Negative prompt"] == "monochrome, lowres, bad anatomy, worst quality, low quality"
    assert params["Steps"] == "2" and params["Sampler"] == "Euler" and params["Seed"] == "42"
    panel = panel_from_params(params, ["smile", "age"])
    assert panel.enabled and panel.scale == 0.0 and panel.start == 20.0
    assert panel.edits["smile"] == -2.0 and panel.edits["age"] == 1.0 and panel.identity == "tiny"


def test_photo_seed_and_mix_with_score(tiny, tmp_path, capsys):
    """--photo encodes once (tiny e4e), --score rates every cell against the photo (real dlib)."""
    model = SeededTinyE4E()
    out = tmp_path / "photo.png"
    args = _args(tiny, "--photo", str(PHOTO), "--mix-with", "seed:3", "--mix", "0.2/0.5/0.8", "--score",
                 "--scale", "0,1", "-o", str(out))
    assert main(args, e4e_loader=lambda: model) == 0
    text = capsys.readouterr().out
    assert "W+ of" in text and "encoded" in text and text.count("no face found") == 2  # a tiny model draws no face
    info = Image.open(out).info["parameters"]
    assert "Wplus identity: photo" in info and "Wplus mix: seed 3@0.2/0.5/0.8" in info
    assert "Wplus score: no face; no face" in info  # one score per cell, split on "; "
    out2 = tmp_path / "seed.png"
    assert main(_args(tiny, "--random-identity", "7", "-o", str(out2)), e4e_loader=lambda: model) == 0
    assert "Wplus identity: seed 7" in Image.open(out2).info["parameters"]
    assert Image.open(out2).size == (64, 64)


def test_offline_every_missing_file_is_named(tiny, capsys, tmp_path):
    args = _args(tiny, "--photo", str(PHOTO), "-o", str(tmp_path / "x.png"))
    i = args.index("--adapter")
    del args[i:i + 2]
    args[args.index("--models") + 1] = str(tmp_path / "empty")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().split("\n")
    assert len(err) == 2 and "'wplus_adapter.bin'" in err[0] and "'e4e_ffhq_encode.pt'" in err[1]
    assert all(str(tmp_path / "empty") in line and "https://" in line for line in err)
