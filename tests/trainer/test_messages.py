"""What the trainer tells the user, and its exit statuses: bad files in one line naming them, nothing
prepared is an error, resuming checks the checkpoint's stage and settings, the run names its outputs,
SIGTERM checkpoints and exits 143, exported files are readable by others (umask), real --help."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from conftest import OFFICIAL, ROOT

E4E = OFFICIAL / "test_data" / "e4e"
RES = 64



def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                PYTHONPATH=str(ROOT))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny SD model and a manifest of the paper's aligned test faces with their W+ (both stages)."""
    from trainer.tiny import build_tiny_sd
    root = tmp_path_factory.mktemp("messages")
    build_tiny_sd(root / "sd")
    data = root / "data"
    data.mkdir()
    Image.new("L", (512, 512), 255).save(data / "face_mask.png")
    with open(data / "manifest.jsonl", "w") as f:
        for i in (1, 2, 3):
            shutil.copy(E4E / f"{i}.png", data / f"{i}.png")
            shutil.copy(E4E / f"{i}.pth", data / f"{i}.pth")
            f.write(json.dumps({"id": str(i), "aligned": f"{i}.png", "wplus": f"{i}.pth", "wild": f"{i}.png",
                                "wild_mask": "face_mask.png"}) + "\n")
    return root


def _args(work, out, *extra, steps=2):
    return ["--stage", "1", "--pretrained-model", str(work / "sd"), "--manifest", str(work / "data" / "manifest.jsonl"),
            "--resolution", str(RES), "--train-batch-size", "2", "--max-steps", str(steps), "--mixed-precision", "no",
            "--output-dir", str(out), "--no-progress", "--learning-rate", "1e-3", "--report-to", "none", *extra]


# ----------------------------------------------------------------------------- bad input files
@pytest.mark.needs_shared
def test_corrupt_safetensors_base_model_is_one_line_naming_it(work, tmp_path):
    bad = tmp_path / "v1-5-pruned.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json} and then some bytes")
    args = _args(work, tmp_path / "out")
    args[args.index("--pretrained-model") + 1] = str(bad)
    r = subprocess.run([sys.executable, "trainer/train.py", *args], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(bad) in lines[0], r.stderr
    assert "is not a readable safetensors file" in lines[0]  # the one safe-load message (wplus.assets.io)


def _faces(tmp_path, with_wplus=()):
    faces = tmp_path / "faces"
    faces.mkdir()
    for i in (1, 2):
        shutil.copy(E4E / f"{i}.png", faces / f"p{i}.png")
    for i in with_wplus:
        shutil.copy(E4E / f"{i}.pth", faces / f"p{i}.pth")
    return faces


@pytest.mark.needs_shared
def test_prepare_with_a_missing_e4e_file_is_one_line_naming_it(tmp_path, capsys):
    from trainer.prepare import main
    faces = _faces(tmp_path)
    missing = tmp_path / "models" / "e4e_ffhq_encode.pt"
    assert main(["--faces", str(faces), "--out", str(tmp_path / "data"), "--e4e", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(missing) in err[0]
    assert "releases/download/v1/e4e_ffhq_encode.pt" in err[0]
    # the folders are checked before the (1 GB) e4e file is even looked at
    assert main(["--faces", str(tmp_path / "facez"), "--out", str(tmp_path / "data"), "--e4e", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"error: --faces {tmp_path / 'facez'}: no such folder"


@pytest.mark.needs_shared
def test_prepare_without_any_wplus_source_says_so_once(tmp_path, capsys):
    from trainer.prepare import main
    faces = _faces(tmp_path)
    assert main(["--faces", str(faces), "--out", str(tmp_path / "data")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # not a line per photo
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: no W+ source: give --e4e")
    assert "--wplus-dir" in captured.err


@pytest.mark.needs_shared
def test_prepare_that_writes_no_sample_exits_2_with_the_reason_once(tmp_path, capsys):
    pytest.importorskip("dlib")
    from trainer.prepare import main
    faces = _faces(tmp_path)  # photos, but no p1.pth / p2.pth beside them
    assert main(["--faces", str(faces), "--out", str(tmp_path / "data"), "--wplus-dir", str(faces)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert err == [f"error: no sample was prepared: all 2 photo(s) were skipped (2 no W+ file in --wplus-dir); "
                   f"each one's reason is in {tmp_path / 'data' / 'skipped.jsonl'}"]
    assert "skipped 2 (2 no W+ file in --wplus-dir)" in captured.out
    skipped = [json.loads(line) for line in (tmp_path / "data" / "skipped.jsonl").read_text().splitlines()]
    assert [s["image"].split("/")[-1] for s in skipped] == ["p1.png", "p2.png"]
    assert "p1.pth" in skipped[0]["reason"] and "--e4e" in skipped[0]["reason"]


@pytest.mark.needs_shared
def test_skipped_jsonl_is_this_runs_list(tmp_path, capsys):
    pytest.importorskip("dlib")
    from trainer.prepare import main
    faces = _faces(tmp_path, with_wplus=(1,))
    Image.new("RGB", (200, 160), (90, 90, 90)).save(faces / "blank.png")
    shutil.copy(E4E / "3.pth", faces / "blank.pth")  # it has a W+ file, but no face
    out = tmp_path / "data"
    for _ in range(2):  # the second run redoes only what is not in the manifest
        assert main(["--faces", str(faces), "--out", str(out), "--wplus-dir", str(faces)]) == 0
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert sorted(s["image"].split("/")[-1] for s in skipped) == ["blank.png", "p2.png"]  # not twice each
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 1
    shutil.copy(E4E / "2.pth", faces / "p2.pth")  # fixed: the next run's list no longer has it
    assert main(["--faces", str(faces), "--out", str(out), "--wplus-dir", str(faces)]) == 0
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert [s["image"].split("/")[-1] for s in skipped] == ["blank.png"] and skipped[0]["cause"] == "no usable face"
    printed = capsys.readouterr().out
    assert "prepared 1 new sample(s), 1 already in the manifest, skipped 1 (1 no usable face)" in printed


# ----------------------------------------------------------------------------- runs, resume, export
@pytest.fixture(scope="module")
def stage1(work, tmp_path_factory):
    """Two Stage I steps, in-process; the run's console output (umask 022 while exporting)."""
    import io
    from contextlib import redirect_stdout

    from trainer.config import parse_config
    from trainer.engine import run
    out = tmp_path_factory.mktemp("stage1") / "run"
    old = os.umask(0o022)
    buf = io.StringIO()
    try:
        with redirect_stdout(buf):
            trainer = run(parse_config(_args(work, out, "--checkpoint-every", "2", "--export-official")))
    finally:
        os.umask(old)
    return out, trainer, buf.getvalue()


@pytest.mark.needs_shared
def test_the_run_names_its_exported_files(stage1):
    out, _, printed = stage1
    assert (f"W+ trainer: finished at step 2. Adapter: {out / 'wplus_adapter.safetensors'} and "
            f"{out / 'wplus_adapter.bin'} (last checkpoint: {out / 'checkpoints' / 'step-0000002'})") in printed


@pytest.mark.needs_shared
def test_exported_files_are_readable_by_others_following_the_umask(stage1, tmp_path):
    import wplus
    from trainer.export import export_adapter
    out = stage1[0]
    for name in ("wplus_adapter.safetensors", "wplus_adapter.bin",
                 "checkpoints/step-0000002/wplus_adapter.safetensors"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name
    adapter = wplus.load_adapter(out / "wplus_adapter.safetensors")
    old = os.umask(0o027)
    try:
        export_adapter(adapter, tmp_path, official=True)
    finally:
        os.umask(old)
    assert (tmp_path / "wplus_adapter.safetensors").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "wplus_adapter.bin").stat().st_mode & 0o777 == 0o640


@pytest.mark.needs_shared
def test_a_stage1_checkpoint_does_not_resume_stage2(stage1, work, capsys):
    from trainer.train import main
    ckpt = stage1[0] / "checkpoints" / "step-0000002"
    args = _args(work, stage1[0].parent / "stage2", "--resume", str(ckpt))
    args[args.index("--stage") + 1] = "2"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    err = [line for line in err.splitlines() if "error" in line]  # (transformers 5 adds loading bars)
    assert err == [f"error: --resume {ckpt}: that checkpoint is from Stage 1 (its meta.json) and this run is "
                   f"Stage 2; a checkpoint only continues its own stage: start Stage II from its adapter with "
                   f"--init {ckpt / 'wplus_adapter.safetensors'} (and no --resume)"]


@pytest.mark.needs_shared
def test_resuming_with_other_settings_warns_and_uses_them(stage1, work, tmp_path, capsys):
    from trainer.config import parse_config
    from trainer.engine import run
    out = tmp_path / "resumed"
    shutil.copytree(stage1[0] / "checkpoints", out / "checkpoints")
    args = _args(work, out, "--resume", "latest", steps=3)
    args[args.index("--train-batch-size") + 1] = "1"
    args[args.index("--learning-rate") + 1] = "5e-4"
    trainer = run(parse_config(args))
    printed = capsys.readouterr().out
    assert ("warning: resuming " in printed and "train_batch_size 2 -> 1, learning_rate 0.001 -> 0.0005." in printed
            and "not as the interrupted run would have" in printed)
    assert [h["step"] for h in trainer.history] == [3] and trainer.history[0]["lr"] == 5e-4
    assert all(g["lr"] == 5e-4 for g in trainer.optimizer.param_groups)


def test_resume_checks_read_meta_json(tmp_path):
    from trainer.config import TrainConfig
    from trainer.resume import check_resume
    cfg = TrainConfig(stage=2, resolution=256, train_batch_size=4, max_steps=500)
    meta = {"step": 10, "stage": 2, "processes": 8,
            "config": dict(TrainConfig(stage=2, resolution=512, train_batch_size=4, max_steps=100).to_dict())}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    said = []
    changed = check_resume(tmp_path, cfg, processes=1, warn=said.append)
    assert changed == {"resolution": (512, 256), "max_steps": (100, 500), "processes": (8, 1)}
    assert len(said) == 1 and "resolution 512 -> 256, processes 8 -> 1." in said[0] and "max_steps" not in said[0]
    meta["config"] = cfg.to_dict()
    meta["processes"] = 1
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    assert check_resume(tmp_path, cfg, processes=1, warn=said.append) == {} and len(said) == 1
    meta["stage"] = 1
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="from Stage 1 .* this run is Stage 2"):
        check_resume(tmp_path, cfg, processes=1)
    with pytest.raises(ValueError, match="resume it with --stage 2"):
        meta["stage"] = 2
        (tmp_path / "meta.json").write_text(json.dumps(meta))
        check_resume(tmp_path, TrainConfig(stage=1), processes=1)


@pytest.mark.needs_shared
def test_sigterm_writes_a_checkpoint_says_so_and_exits_143(work, tmp_path):
    out = tmp_path / "run"
    args = _args(work, out, "--checkpoint-every", "0", steps=100000)
    proc = subprocess.Popen([sys.executable, "trainer/train.py", *args], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 400
        while not (out / "metrics.jsonl").is_file() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM == 143, stdout + stderr
    ckpts = sorted((out / "checkpoints").iterdir())
    assert len(ckpts) == 1 and (ckpts[0] / "state.pt").is_file()
    step = int(ckpts[0].name.split("-")[1])
    assert step >= 1 and (f"W+ trainer: stopped by SIGTERM at step {step}/100000; checkpoint saved: {ckpts[0]}. "
                          f"Continue with --resume latest --output-dir {out}") in stdout
    assert not (out / "wplus_adapter.safetensors").exists()  # an unfinished run is not exported


# ----------------------------------------------------------------------------- --help
def test_tiny_has_a_real_parser(tmp_path):
    r = subprocess.run([sys.executable, "-m", "trainer.tiny", "--help"], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("usage: python -m trainer.tiny") and "--resolution 64" in r.stdout
    assert list(tmp_path.iterdir()) == []  # no folder named --help
    r = subprocess.run([sys.executable, "-m", "trainer.tiny", "--bogus"], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unrecognized arguments: --bogus" in r.stderr and list(tmp_path.iterdir()) == []


def test_export_help_description_is_whole(capsys):
    from trainer.export import main
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert ("Export the trained adapter: our .safetensors (the WebUI panel's format) and, on request, the "
            "official `wplus_adapter.bin` layout.") in text
