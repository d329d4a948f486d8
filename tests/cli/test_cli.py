"""`python -m wplus`: invert a real photo (tiny e4e injected), list directions, report downloads."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import (
    OFFICIAL,  # noqa: E402
    ROOT,  # noqa: E402
)
from helpers.tiny_e4e import TinyE4E
from wplus.cli import main
from wplus.identity.files import load_identity
from wplus.stylegan.directions import DirectionLibrary, apply_edits


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), WPLUS_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "wplus", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=120)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A models folder holding the paper's directions (as `python -m wplus download` leaves it)."""
    root = tmp_path_factory.mktemp("models")
    if (OFFICIAL / "w_direction").is_dir():
        shutil.copytree(OFFICIAL / "w_direction", root / "w_direction")
    return root


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    import skimage.data

    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(path)
    return path


def test_help():
    out = run_cli("--help")
    assert out.returncode == 0
    assert all(cmd in out.stdout for cmd in ("invert", "download", "directions"))
    out = run_cli("invert", "--help")
    assert out.returncode == 0
    assert "--face-index" in out.stdout and "--edit" in out.stdout and "--no-download" in out.stdout


@pytest.mark.needs_shared
def test_invert_with_edits_then_cache_hit(models, photo, tmp_path, capsys):
    model = TinyE4E()
    preview = tmp_path / "prev.png"
    rc = main(["invert", str(photo), "-o", "astro", "--edit", "smile=2", "--edit", "lipstick=10",
               "--preview", str(preview), "--models", str(models), "--no-download"], e4e_loader=lambda: model)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "1 face found" in out and "[0] box (" in out and "<- encoded" in out and "W+ encoded" in out
    ident = load_identity("astro", folder=models / "identities")
    lib = DirectionLibrary.from_folders(models / "w_direction")
    expected = apply_edits(ident.wplus_unedited, {"smile": 2.0, "lipstick": 10.0}, lib)
    assert torch.equal(ident.wplus, expected) and not torch.equal(ident.wplus, ident.wplus_unedited)
    assert ident.edits == "smile=2; lipstick=10" and ident.backend == "dlib" and ident.thumbnail is not None
    img = Image.open(preview)
    assert img.size == (3 * 256, 256)  # aligned | reconstruction | edited
    assert model.encode_calls == 1 and model.released

    rc = main(["invert", str(photo), "-o", "astro2", "--no-preview", "--models", str(models), "--no-download"],
              e4e_loader=lambda: model)
    out = capsys.readouterr().out
    assert rc == 0 and "from cache" in out and model.encode_calls == 1
    assert torch.equal(load_identity("astro2", folder=models / "identities").wplus, ident.wplus_unedited)


def test_invert_bad_inputs_are_messages(models, photo, tmp_path, capsys):
    model = TinyE4E()
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    assert main(["invert", str(junk), "--models", str(models), "--no-download"], e4e_loader=lambda: model) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["invert", str(photo), "--face-index", "3", "--models", str(models), "--no-download"],
                e4e_loader=lambda: model) == 2
    assert "out of range" in capsys.readouterr().err
    if (models / "w_direction").is_dir():
        assert main(["invert", str(photo), "--edit", "smiel=1", "--models", str(models), "--no-download"],
                    e4e_loader=lambda: model) == 2
        assert "unknown edit direction 'smiel'. Did you mean: smile?" in capsys.readouterr().err
    assert model.encode_calls == 0


def test_invert_without_e4e_names_file_url_folder(photo, tmp_path):
    out = run_cli("invert", str(photo), "--models", str(tmp_path), "--no-download")
    assert out.returncode == 2
    assert "e4e_ffhq_encode.pt" in out.stderr
    assert "https://github.com/csxmli2016/w-plus-adapter/releases/download/v1/e4e_ffhq_encode.pt" in out.stderr
    assert str(tmp_path.resolve()) in out.stderr and "Traceback" not in out.stderr


@pytest.mark.needs_shared
def test_directions_and_download_listing(models, capsys):
    assert main(["directions", "--models", str(models), "--no-download"]) == 0
    out = capsys.readouterr().out
    assert "expression:" in out and "pose:" in out and "65 directions" in out
    assert "lipstick" in out and "(layer 10)" in out
    # per format, which W+ layers an edit touches
    line = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ")}
    assert "interfacegan" in line["smile"] and "(all 18 layers)" in line["smile"]
    assert "latent" in line["latent/smile"] and "(layers 0-7)" in line["latent/smile"]
    assert main(["download", "--check", "--what", "directions", "--models", str(models)]) == 0
    out = capsys.readouterr().out
    assert "MISSING" not in out and out.count(" ok ") == 25


def test_download_check_and_offline_directions(tmp_path):
    out = run_cli("download", "--no-download", "--what", "e4e", "--models", str(tmp_path))
    assert out.returncode == 2 and "MISSING" in out.stdout and "e4e_ffhq_encode.pt" in out.stdout
    assert "--no-download" in out.stderr
    out = run_cli("directions", "--models", str(tmp_path))  # WPLUS_OFFLINE=1 in run_cli
    assert out.returncode == 2 and "raw.githubusercontent.com/csxmli2016/w-plus-adapter/main/w_direction/" in out.stderr
    assert str((tmp_path / "w_direction").resolve()) in out.stderr and "(WPLUS_OFFLINE=1 is set)" in out.stderr
    # every missing file is named (not only the first), each with its URL ...
    from wplus.assets import registry
    files = registry.direction_files()
    assert len(files) == 25 and "25 of 25 edit-direction files are missing" in out.stderr
    for entry in files:
        assert f"{entry.filename}  <- {entry.url}" in out.stderr
    # ... and the edits are listed by name from the registry, marked as missing, in their groups
    assert "65 directions, 65 not usable" in out.stdout and "expression:" in out.stdout
    rows = {line.split()[0]: line for line in out.stdout.splitlines() if line.startswith("  ")}
    assert len(rows) == 65
    assert "interfacegan MISSING (smile.pt)" in rows["smile"] and "MISSING (smile.npy)" in rows["latent/smile"]
    assert "MISSING (ffhq_pca.pt, ganspace_configs.csv)" in rows["lipstick"]
    assert "Traceback" not in out.stderr


@pytest.mark.needs_shared
def test_offline_directions_with_some_files_missing(tmp_path):
    shutil.copytree(OFFICIAL / "w_direction", tmp_path / "w_direction")
    for rel in ("latent_directions/smile.npy", "ganspace_configs.csv"):
        os.chmod(tmp_path / "w_direction" / rel, 0o644)
        (tmp_path / "w_direction" / rel).unlink()
    out = run_cli("directions", "--models", str(tmp_path), "--no-download")
    assert out.returncode == 2
    assert "2 of 25 edit-direction files are missing and --no-download was given" in out.stderr
    assert "latent_directions/smile.npy  <-" in out.stderr and "ganspace_configs.csv  <-" in out.stderr
    assert "ffhq_pca.pt  <-" not in out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines() if line.startswith("  ")}
    assert len(rows) == 65 and "65 directions, 43 not usable" in out.stdout
    assert "range -5..5  suggested 3" in rows["smile"] and "MISSING (smile.npy)" in rows["latent/smile"]
    assert "range -5..5" in rows["emotion_happy"] and "MISSING (ganspace_configs.csv)" in rows["lipstick"]


def test_download_check_exit_status(tmp_path, capsys):
    assert main(["download", "--check", "--what", "e4e", "--models", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "MISSING" in captured.out and "1 of 1 file(s) missing" in captured.err
    assert "python -m wplus download --what e4e" in captured.err
    (tmp_path / "e4e_ffhq_encode.pt").write_bytes(b"present")  # the registry has no hash for e4e
    assert main(["download", "--check", "--what", "e4e", "--models", str(tmp_path)]) == 0
    assert " ok " in capsys.readouterr().out


def test_invert_checks_the_photo_before_the_e4e_file(photo, tmp_path):
    """A typo in the photo path must not send the user to download a gigabyte (no e4e here)."""
    out = run_cli("invert", str(tmp_path / "phtoo.jpg"), "--models", str(tmp_path), "--no-download")
    assert out.returncode == 2 and "no such file" in out.stderr and "phtoo.jpg" in out.stderr
    assert "e4e_ffhq_encode.pt" not in out.stderr and "Traceback" not in out.stderr
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = run_cli("invert", str(junk), "--models", str(tmp_path), "--no-download")
    assert out.returncode == 2 and "junk.jpg" in out.stderr and "e4e_ffhq_encode.pt" not in out.stderr


def test_unknown_edit_names_get_close_matches(tmp_path):
    import numpy as np

    from wplus.errors import DirectionError

    for stem in ("smile", "lipstick", "lipstick_and_age", "age"):
        np.save(tmp_path / f"{stem}.npy", np.zeros((18, 512), np.float32))
    lib = DirectionLibrary.from_folders(user=tmp_path)
    for typo, hint in (("smiel", "Did you mean: smile?"), ("lipstik", "Did you mean: lipstick, lipstick_and_age?"),
                       ("Smile", "Did you mean: smile?"), ("stick", "Did you mean: lipstick, lipstick_and_age?")):
        with pytest.raises(DirectionError) as exc:
            lib.get(typo)
        assert f"unknown edit direction {typo!r}. {hint}" == str(exc.value)
    with pytest.raises(DirectionError, match="Run `python -m wplus directions` to list them"):
        lib.get("zzzzzz")


def test_convert_help_lists_only_accepted_options(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "wplus.convert", "--help"], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 0 and "--official" not in out.stdout
    assert "--half" in out.stdout and "suffix" in out.stdout
    out = subprocess.run([sys.executable, "-m", "wplus.convert", "a.bin", "b.bin", "--official"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 2 and "unrecognized arguments: --official" in out.stderr


def test_cli_and_webui_name_the_e4e_file_alike(photo, tmp_path):
    """The same photo encoded from the CLI and from the WebUI panel hits the same identity-cache entry."""
    from wplus.cli import build_parser
    from wplus.cli.invert import _checkpoint_loader
    from wplus.generation.resolve import IdentityResolver
    from wplus.identity.cache import cache_key
    from wplus.webui.settings import ExtensionSettings

    models = tmp_path / "models"
    models.mkdir()
    (models / "e4e_ffhq_encode.pt").write_bytes(b"weights v1")
    webui = IdentityResolver(ExtensionSettings(models_dir=models), e4e_loader=lambda: None).encoder.encoder_tag
    for extra in ([], ["--e4e", str(models / "e4e_ffhq_encode.pt")]):
        args = build_parser().parse_args(["invert", str(photo), "--models", str(models), "--no-download", *extra])
        _, cli = _checkpoint_loader(args, models)
        assert cli == webui and cache_key("h", None, "dlib", cli) == cache_key("h", None, "dlib", webui)
    os.utime(models / "e4e_ffhq_encode.pt", ns=(1, 1))  # another version of the weights: another key
    args = build_parser().parse_args(["invert", str(photo), "--models", str(models), "--no-download"])
    assert _checkpoint_loader(args, models)[1] != cli


def test_missing_e4e_argument_names_the_file(photo, tmp_path):
    rc = main(["invert", str(photo), "--e4e", str(tmp_path / "gone.pt"), "--models", str(tmp_path), "--no-download"])
    assert rc == 2


def test_invert_several_photos_is_one_mean_identity(models, photo, tmp_path, capsys):
    """`invert a.png b.png -o alice`: each photo encoded once, the identity is their mean W+."""
    model = TinyE4E()
    second = tmp_path / "astronaut_flipped.png"
    Image.open(photo).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(second)
    rc = main(["invert", str(photo), str(second), "-o", "alice", "--no-preview", "--models", str(models),
               "--no-download", "--no-cache"], e4e_loader=lambda: model)
    out = capsys.readouterr().out
    assert rc == 0 and model.encode_calls == 2 and "mean of the W+ codes of 2 photos" in out
    ident = load_identity("alice", models / "identities")
    assert [s["file"] for s in ident.sources] == ["astronaut.png", "astronaut_flipped.png"]
    single = [main(["invert", str(p), "-o", f"one{i}", "--no-preview", "--models", str(models), "--no-download",
                    "--no-cache"], e4e_loader=lambda: model) for i, p in enumerate((photo, second))]
    assert single == [0, 0]
    codes = [load_identity(f"one{i}", models / "identities").wplus for i in range(2)]
    torch.testing.assert_close(ident.wplus, (codes[0] + codes[1]) / 2)
