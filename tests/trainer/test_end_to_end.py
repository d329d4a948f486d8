"""The trainer as a user runs it, on whatever stack is installed (CI runs it on current releases):
`trainer/prepare.py` on JPEG and PNG photos -> Stage I -> Stage II -> `trainer/export.py` -> the
exported adapter loads and changes a UNet. Tiny SD model, the paper's real test photos, CPU."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image

from conftest import OFFICIAL, ROOT

E4E = OFFICIAL / "test_data" / "e4e"
WILD = OFFICIAL / "test_data" / "in_the_wild"

pytest.importorskip("dlib")
pytestmark = pytest.mark.skipif(not E4E.is_dir(), reason="../shared test photos not available")


def test_prepare_train_export_on_jpeg_and_png_photos(tmp_path):
    import wplus
    from trainer.config import parse_config
    from trainer.engine import run
    from trainer.export import main as export
    from trainer.tiny import build_tiny_sd

    faces, wild, codes = tmp_path / "faces", tmp_path / "wild", tmp_path / "codes"
    for d in (faces, wild, codes):
        d.mkdir()
    for i in (1, 2, 3):  # the paper's aligned faces: two as PNG, one re-saved as a JPEG
        if i == 3:
            Image.open(E4E / f"{i}.png").convert("RGB").save(faces / f"p{i}.jpg", quality=95)
        else:
            shutil.copy(E4E / f"{i}.png", faces / f"p{i}.png")
        shutil.copy(E4E / f"{i}.pth", codes / f"p{i}.pth")
    shutil.copy(WILD / "1.jpg", wild / "w1.jpg")
    shutil.copy(WILD / "2.png", wild / "w2.png")
    for stem, code in (("w1", 4), ("w2", 5)):  # W+ codes of the people in the wild photos (as e4e would give)
        (wild / f"{stem}.txt").write_text("a person in a garden\n")
        shutil.copy(E4E / f"{code}.pth", codes / f"{stem}.pth")

    r = subprocess.run([sys.executable, "trainer/prepare.py", "--faces", str(faces), "--wild", str(wild),
                        "--out", str(tmp_path / "data"), "--wplus-dir", str(codes)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "data" / "manifest.jsonl").read_text().splitlines()]
    assert sorted(rec["id"] for rec in records) == ["face-p1", "face-p2", "face-p3", "wild-w1", "wild-w2"], r.stdout

    build_tiny_sd(tmp_path / "sd")
    common = ["--pretrained-model", str(tmp_path / "sd"), "--manifest", str(tmp_path / "data" / "manifest.jsonl"),
              "--resolution", "64", "--train-batch-size", "2", "--max-steps", "2", "--mixed-precision", "no",
              "--no-progress", "--report-to", "none", "--learning-rate", "1e-3"]
    run(parse_config(["--stage", "1", "--output-dir", str(tmp_path / "s1"), *common]))
    run(parse_config(["--stage", "2", "--output-dir", str(tmp_path / "s2"),
                      "--init", str(tmp_path / "s1" / "wplus_adapter.safetensors"), *common]))
    losses = [json.loads(line) for line in (tmp_path / "s2" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in losses] == [1, 2] and all(torch.isfinite(torch.tensor(m["loss"])) for m in losses)

    assert export([str(tmp_path / "s2" / "wplus_adapter.safetensors"), str(tmp_path / "out"), "--official"]) == 0
    ours, official = (wplus.load_adapter(tmp_path / "out" / name)
                      for name in ("wplus_adapter.safetensors", "wplus_adapter.bin"))
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), official.state_dict().values()))

    from diffusers import UNet2DConditionModel
    unet = UNet2DConditionModel.from_pretrained(tmp_path / "sd", subfolder="unet").eval()
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(1, 4, 8, 8, generator=g), torch.tensor([500])
    text = torch.randn(1, 77, ours.context_dim, generator=g)
    code = torch.load(codes / "p1.pth", map_location="cpu", weights_only=True).reshape(1, 18, 512)
    with torch.no_grad():
        plain = unet(x, t, text).sample
        with wplus.attach(unet, ours) as handle:
            handle.tokens = ours.project(code)
            handle.scale = 1.0
            branched = unet(x, t, text).sample
        assert not torch.equal(plain, branched) and torch.equal(unet(x, t, text).sample, plain)
