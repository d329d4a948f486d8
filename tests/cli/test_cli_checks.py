"""The command line checks what the WebUI checks, with the same option schema, and in the user's
order: what was typed first, then every missing file at once, and only then anything heavy."""
from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image

from conftest import OFFICIAL, ROOT
from wplus.cli import main


@pytest.fixture
def folder_model(tmp_path):
    """A --model that exists (nothing loads it: every check here fails before the pipeline)."""
    path = tmp_path / "sd"
    path.mkdir()
    return path


def generate(model, *extra, models=None):
    return ["generate", "--model", str(model), "--prompt", "a face", "-o", "x.png", "--no-download",
            "--models", str(models or model.parent / "models"), *extra]


@pytest.mark.parametrize("extra, message", [
    (["--identity", "x", "--scale", "9"], "'--scale' must be between 0 and 4; 9 is outside that range"),
    (["--identity", "x", "--scale=-1"], "'--scale' must be between 0 and 4; -1 is outside that range"),
    (["--identity", "x", "--scale", "0,1,5"], "'--scale' must be between 0 and 4; 5 is outside that range"),
    (["--identity", "x", "--start", "101"], "'--start' must be between 0 and 100"),
    (["--photo", "p.png", "--face-index", "-2"], "'--face-index' must be >= -1"),
    (["--random-identity", "-3"], "'--random-identity' must be >= 0"),
    (["--identity", "x", "--mix-with", "seed:1", "--mix", "0.2/1.5/0"], "'--mix' must be between 0 and 1"),
])
def test_limits_are_the_webuis(folder_model, capsys, extra, message):
    if "--photo" in extra:
        Image.new("RGB", (8, 8)).save(folder_model.parent / "p.png")
        extra = [e if e != "p.png" else str(folder_model.parent / "p.png") for e in extra]
    assert main(generate(folder_model, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: W+ Adapter: {message}" or (err.startswith("error: ") and message in err), err


@pytest.mark.needs_shared
def test_edit_strength_outside_its_directions_range(folder_model, tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    (models / "w_direction").symlink_to(OFFICIAL / "w_direction")
    args = generate(folder_model, "--identity", "x", "--adapter", str(folder_model), "--edit", "smile=50",
                    models=models)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "'--edit smile' must be between" in err and "50 is outside that range" in err


def test_photo_is_checked_before_any_weights(folder_model, tmp_path, capsys):
    """An empty models folder, downloads off: the typo is reported, not the 1 GB e4e."""
    assert main(generate(folder_model, "--photo", str(tmp_path / "typo.jpg"))) == 2
    assert capsys.readouterr().err.strip() == f"error: --photo {tmp_path / 'typo.jpg'}: no such file"
    assert main(generate(folder_model, "--photo", str(tmp_path))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --photo {tmp_path}: is a folder, not a photo")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    assert main(generate(folder_model, "--photo", str(tmp_path / "broken.jpg"))) == 2
    assert "broken.jpg" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()  # nothing was created for a run that never started


def test_offline_every_missing_file_is_named_model_included(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    photo = tmp_path / "me.png"
    Image.new("RGB", (64, 64), "white").save(photo)
    args = ["generate", "--photo", str(photo), "--prompt", "a face", "-o", str(tmp_path / "x.png"),
            "--models", str(tmp_path / "empty"), "--no-download"]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().split("\n")
    assert len(lines) == 3, lines
    assert "Missing the base model 'stable-diffusion-v1-5/stable-diffusion-v1-5'" in lines[0]
    assert "hf download stable-diffusion-v1-5/stable-diffusion-v1-5" in lines[0]
    assert "'wplus_adapter.bin'" in lines[1] and "'e4e_ffhq_encode.pt'" in lines[2]


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys, tmp_path):
    from wplus.cli import download

    def interrupted(args, e4e_loader=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "run", interrupted)
    assert main(["download", "--models", str(tmp_path)]) == 130
    err = capsys.readouterr().err.strip()
    assert err == "interrupted: `download` stopped"


def test_help_names_the_command_the_user_typed(monkeypatch):
    out = subprocess.run([sys.executable, "-m", "wplus", "--help"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("usage: python -m wplus ")
    from wplus.cli import build_parser
    from wplus.cli.parser import prog_name

    monkeypatch.setattr(sys, "argv", ["/home/me/.venv/bin/wplus", "--help"])
    assert prog_name() == "wplus"
    assert build_parser().format_help().startswith("usage: wplus ")
    assert "wplus generate --photo me.jpg" in build_parser().format_help()


def test_grid_scores_split_per_cell():
    from wplus.pipeline.score import SEPARATOR, Score, format_scores

    text = format_scores([Score(None, None), Score(0.93, 0.28), Score(None, None)])
    assert text == "no face; 0.930/0.280; no face" and len(text.split(SEPARATOR)) == 3
