"""Data preparation on real photos (dlib backend, offline): aligned faces, masks, W+ codes from
precomputed files or an injected encoder, wild face masks, manifest, skips, resume."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import OFFICIAL
from trainer import data as data_mod
from trainer.config import TrainConfig
from trainer.prepare import prepare

E4E = OFFICIAL / "test_data" / "e4e"
WILD = OFFICIAL / "test_data" / "in_the_wild"

pytest.importorskip("dlib")
pytestmark = pytest.mark.needs_shared


class TinyEncoder(torch.nn.Module):
    """A random stand-in for e4e with its interface: (B,3,256,256) in [-1,1] -> (B,18,512)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 4, stride=4)
        self.fc = torch.nn.Linear(8 * 8 * 8, 18 * 512)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        h = torch.nn.functional.adaptive_avg_pool2d(self.conv(x), 8).flatten(1)
        return self.fc(h).reshape(-1, 18, 512)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    faces, wild = root / "faces", root / "wild"
    faces.mkdir()
    wild.mkdir()
    for i in (1, 2):
        shutil.copy(E4E / f"{i}.png", faces / f"p{i}.png")
        shutil.copy(E4E / f"{i}.pth", faces / f"p{i}.pth")
    shutil.copy(WILD / "2.png", wild / "w2.png")
    (wild / "w2.txt").write_text("a man in a suit in front of a flag\n\na politician smiling\n")
    Image.new("RGB", (320, 240), (120, 120, 120)).save(wild / "empty.png")
    (wild / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    enc = TinyEncoder()
    report = prepare(root / "data", faces=faces, wild=wild, encoder=enc, wplus_dir=faces, log=lambda s: None)
    return root, report, enc


def test_manifest_records_and_files(prepared):
    root, report, enc = prepared
    assert report.done == 3 and report.reused == 0
    recs = data_mod.read_manifest(root / "data" / "manifest.jsonl")
    assert [r["id"] for r in recs] == ["face-p1", "face-p2", "wild-w2"]
    raw = [json.loads(line) for line in (root / "data" / "manifest.jsonl").read_text().splitlines()]
    assert all(not r["aligned"].startswith("/") for r in raw)  # relative to the manifest
    for r in recs:
        assert Image.open(r["aligned"]).size == (512, 512)
        m = np.asarray(Image.open(r["mask"]))
        assert m[256, 256] > 200 and m[0, 0] < 30 and m[0, 511] < 30  # face covered, corners not
    # precomputed W+ (the official e4e codes) are kept bit for bit
    for i, r in zip((1, 2), recs):
        assert torch.equal(data_mod.load_wplus(r["wplus"]), data_mod.load_wplus(E4E / f"{i}.pth"))
    # the wild photo was encoded by the injected encoder, from the background-removed 256px face
    assert len(enc.seen) == 1 and enc.seen[0].shape == (1, 3, 256, 256)
    x = enc.seen[0]
    assert x.min() >= -1 and x.max() <= 1 and torch.allclose(x[0, :, 0, 0], torch.ones(3))  # white corner
    w = data_mod.load_wplus(recs[2]["wplus"])
    assert torch.allclose(w, enc(x)[0].detach(), atol=1e-6)
    assert recs[2]["captions"] == ["a man in a suit in front of a flag", "a politician smiling"]


def test_wild_face_mask_lies_on_the_face(prepared):
    root, _, _ = prepared
    rec = data_mod.read_manifest(root / "data" / "manifest.jsonl")[2]
    photo, mask = Image.open(rec["wild"]), np.asarray(Image.open(rec["wild_mask"]))
    assert mask.shape == (photo.size[1], photo.size[0])
    import wplus
    face = wplus.detect_faces(photo)[0]
    x0, y0, x1, y1 = (int(v) for v in face.box)
    inside = mask[y0:y1, x0:x1].mean() / 255
    assert inside > 0.6
    assert (mask > 127).sum() < 0.5 * (mask > 127).size  # not the whole photo
    assert mask[:50, :50].max() == 0 and mask[-50:, -50:].max() == 0


def test_images_without_a_usable_face_are_skipped_and_reported(prepared):
    root, report, _ = prepared
    reasons = {s["image"].split("/")[-1]: s["reason"] for s in report.skipped}
    assert set(reasons) == {"empty.png", "broken.jpg"}
    assert "FaceNotFound" in reasons["empty.png"]
    logged = [json.loads(line) for line in (root / "data" / "skipped.jsonl").read_text().splitlines()]
    assert {s["image"].split("/")[-1] for s in logged} == set(reasons)


def test_prepare_resumes_without_redoing_work(prepared):
    root, _, _ = prepared
    enc = TinyEncoder()
    again = prepare(root / "data", faces=root / "faces", wild=root / "wild", encoder=enc,
                    wplus_dir=root / "faces", log=lambda s: None)
    assert again.done == 0 and again.reused == 3 and not enc.seen
    assert len((root / "data" / "manifest.jsonl").read_text().splitlines()) == 3


def test_prepared_manifest_feeds_both_stages(prepared):
    root, _, _ = prepared
    recs = data_mod.read_manifest(root / "data" / "manifest.jsonl")
    assert len(data_mod.stage_records(recs, 1)) == 3
    wild = data_mod.stage_records(recs, 2)
    assert [r["id"] for r in wild] == ["wild-w2"]
    cfg = TrainConfig(stage=2, resolution=64)
    item = data_mod.WPlusDataset(wild, cfg)[(0, 7)]
    assert item["pixels"].shape == (3, 64, 64) and item["face_mask"].shape == (1, 64, 64)
    assert item["face_mask"].max() > 0.5 and item["text"] in ("a man in a suit in front of a flag",
                                                              "a politician smiling", "")


def test_missing_wplus_source_is_refused_before_any_photo(tmp_path):
    faces = tmp_path / "f"
    faces.mkdir()
    shutil.copy(E4E / "3.png", faces / "x.png")
    with pytest.raises(ValueError, match="no W\\+ source: give --e4e .* or --wplus-dir"):
        prepare(tmp_path / "out", faces=faces, log=lambda s: None)
    report = prepare(tmp_path / "out", faces=faces, wplus_dir=tmp_path, log=lambda s: None)
    assert report.done == 0 and "x.pth" in report.skipped[0]["reason"] and "--e4e" in report.skipped[0]["reason"]


def test_worker_processes_prepare_the_same_faces(prepared, tmp_path):
    root, _, _ = prepared
    report = prepare(tmp_path / "data", faces=root / "faces", wplus_dir=root / "faces", workers=2,
                     log=lambda s: None)
    assert report.done == 2 and not report.skipped
    ours = data_mod.read_manifest(tmp_path / "data" / "manifest.jsonl")
    ref = data_mod.read_manifest(root / "data" / "manifest.jsonl")[:2]
    for a, b in zip(ours, ref):
        assert a["id"] == b["id"]
        assert np.array_equal(np.asarray(Image.open(a["aligned"])), np.asarray(Image.open(b["aligned"])))
        assert np.array_equal(np.asarray(Image.open(a["mask"])), np.asarray(Image.open(b["mask"])))
