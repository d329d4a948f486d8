"""Trainer building blocks: config, tokenizer, data stream, augmentation, perturbations, losses,
and the diffusers -> ldm UNet key converter (fast; no training loop here)."""
from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from conftest import FIXTURES, OFFICIAL, ROOT
from trainer import config as config_mod
from trainer import data as data_mod
from trainer import losses, perturb
from trainer.config import TrainConfig, parse_config

E4E = OFFICIAL / "test_data" / "e4e"


# ----------------------------------------------------------------------------- config
def test_help_documents_every_option():
    out = subprocess.run([sys.executable, str(ROOT / "trainer" / "train.py"), "--help"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    for f in config_mod._fields():
        assert "--" + f.name.replace("_", "-") in out, f.name
        assert f.metadata["help"].split()[0] in out
    assert "--config" in out


def test_stage_yaml_then_cli_overrides(tmp_path):
    cfg = parse_config(["--stage", "2", "--learning-rate", "3e-5", "--no-augment"])
    assert cfg.stage == 2 and cfg.lambda_disen == 2.0 and cfg.lambda_preserve == 1.0  # stage2.yaml
    assert cfg.learning_rate == 3e-5 and cfg.augment is False and cfg.mixed_precision == "fp16"
    own = tmp_path / "c.yaml"
    own.write_text("stage: 1\ntrain_batch_size: 3\ntemplates: ['{} portrait']\n")
    cfg = parse_config(["--config", str(own), "--train-batch-size", "5"])
    assert cfg.train_batch_size == 5 and cfg.templates == ["{} portrait"] and cfg.mixed_precision == "no"
    own.write_text("learning_rat: 1\n")
    with pytest.raises(ValueError, match="unknown option"):
        parse_config(["--config", str(own)])


def test_validate_rejects_bad_settings(tmp_path):
    (tmp_path / "x.jsonl").write_text("")
    base = dict(pretrained_model=str(tmp_path), manifest=str(tmp_path / "x.jsonl"))
    with pytest.raises(ValueError, match="--init"):
        TrainConfig(stage=2, **base).validate()
    with pytest.raises(ValueError, match="drop"):
        TrainConfig(i_drop_rate=0.6, t_drop_rate=0.6, **base).validate()
    with pytest.raises(ValueError, match="pretrained"):
        TrainConfig(manifest="x").validate()
    with pytest.raises(ValueError, match="manifest .* not found"):
        TrainConfig(pretrained_model=str(tmp_path), manifest=str(tmp_path / "none.jsonl")).validate()
    with pytest.raises(ValueError, match="takes a range"):
        TrainConfig(aug_scale=[1.2], **base).validate()
    with pytest.raises(ValueError, match="template"):
        TrainConfig(templates=[], **base).validate()
    with pytest.raises(ValueError, match="no such adapter"):
        TrainConfig(stage=2, init=str(tmp_path / "a.safetensors"), **base).validate()


def test_train_py_reports_missing_manifest_cleanly():
    r = subprocess.run([sys.executable, str(ROOT / "trainer" / "train.py"), "--pretrained-model", "x"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "--manifest is required" in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------- tokenizer
def test_clip_tokenizer_built_offline_from_open_clip_vocab(tmp_path):
    from transformers import CLIPTokenizer

    from wplus.assets.checkpoint import open_clip_bpe_path, write_clip_tokenizer
    if open_clip_bpe_path() is None:
        pytest.skip("open_clip's BPE vocabulary is not installed")
    tok = CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp_path / "tok"), local_files_only=True)
    assert len(tok) == 49408
    # OpenAI CLIP ids: <start> a photo of a cat <end>
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok("A PHOTO of a cat").input_ids == tok("a photo of a cat").input_ids


# ----------------------------------------------------------------------------- data
def _manifest(tmp_path, n=5):
    mask = tmp_path / "mask.png"
    m = Image.new("L", (512, 512), 0)
    ImageDraw.Draw(m).ellipse((160, 120, 360, 400), fill=255)
    m.save(mask)
    lines = [json.dumps({"id": str(i), "aligned": str(E4E / f"{i}.png"), "wplus": str(E4E / f"{i}.pth"),
                         "wild": str(E4E / f"{i}.png"), "wild_mask": "mask.png", "captions": ["a man"]})
             for i in range(1, n + 1)]
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "manifest.jsonl"


@pytest.mark.needs_shared
def test_load_official_wplus_files():
    w = data_mod.load_wplus(E4E / "1.pth")
    assert w.shape == (18, 512) and w.dtype == torch.float32 and not w.requires_grad


def test_stream_is_deterministic_and_resumable():
    s = data_mod.StreamSampler(n=7, batch_size=3, seed=5)
    it = iter(s)
    full = [next(it) for _ in range(6)]
    resumed = iter(data_mod.StreamSampler(n=7, batch_size=3, seed=5, start=4))
    assert [next(resumed) for _ in range(2)] == full[4:]
    # every epoch visits every sample once
    flat = [i for b in full for i, _ in b][:14]
    assert sorted(flat[:7]) == list(range(7)) and sorted(flat[7:14]) == list(range(7))
    # two processes split each global batch without overlap
    r0 = next(iter(data_mod.StreamSampler(7, 2, 5, world_size=2, rank=0)))
    r1 = next(iter(data_mod.StreamSampler(7, 2, 5, world_size=2, rank=1)))
    assert len({i for i, _ in r0 + r1}) == 4


def test_drop_rates_match_the_paper():
    cfg = TrainConfig()
    rng = random.Random(0)
    counts = {(a, b): 0 for a in (0, 1) for b in (0, 1)}
    n = 40000
    for _ in range(n):
        d = data_mod.pick_drop(rng, cfg)
        counts[(int(d[0]), int(d[1]))] += 1
    for key in ((1, 0), (0, 1), (1, 1)):
        assert abs(counts[key] / n - 0.05) < 0.006, counts


@pytest.mark.needs_shared
def test_stage1_items_templates_and_dropped_identity(tmp_path):
    cfg = TrainConfig(stage=1, resolution=64, i_drop_rate=1.0, t_drop_rate=0, ti_drop_rate=0)
    recs = data_mod.stage_records(data_mod.read_manifest(_manifest(tmp_path)), 1)
    item = data_mod.WPlusDataset(recs, cfg)[(0, 123)]
    assert item["pixels"].shape == (3, 64, 64) and -1 <= item["pixels"].min() and item["pixels"].max() <= 1
    assert item["id_dropped"] and torch.count_nonzero(item["wplus"]) == 0
    assert item["text"] in [t.format("face") for t in cfg.templates]
    cfg2 = TrainConfig(stage=1, resolution=64, i_drop_rate=0, t_drop_rate=1.0, ti_drop_rate=0)
    item = data_mod.WPlusDataset(recs, cfg2)[(0, 123)]
    assert item["text"] == "" and torch.equal(item["wplus"], data_mod.load_wplus(E4E / "1.pth"))


def test_manifest_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare.py"):
        data_mod.read_manifest(tmp_path / "none.jsonl")
    (tmp_path / "m.jsonl").write_text('{"id": 1, "aligned": "a.png"}\n')
    with pytest.raises(ValueError, match="no Stage 1 samples"):
        data_mod.stage_records(data_mod.read_manifest(tmp_path / "m.jsonl"), 1)
    (tmp_path / "m.jsonl").write_text('{"id": 1, "aligned": "a.png", "wplus": "a.pth"}\n')
    with pytest.raises(ValueError, match="2 file.*relative to the manifest"):
        data_mod.stage_records(data_mod.read_manifest(tmp_path / "m.jsonl"), 1)
    (tmp_path / "m.jsonl").write_text('{"id": 1, "aligned": \n')
    with pytest.raises(ValueError, match="m.jsonl:1: not JSON"):
        data_mod.read_manifest(tmp_path / "m.jsonl")


def test_wild_augmentation_keeps_the_face_in_view():
    cfg = TrainConfig(stage=2, resolution=128, aug_scale=[0.8, 1.2], aug_rotate=10)
    img = Image.new("RGB", (900, 600), (20, 120, 40))
    mask = Image.new("L", (900, 600), 0)
    ImageDraw.Draw(mask).ellipse((700, 80, 820, 230), fill=255)  # a face near the right edge
    area0 = None
    for seed in range(12):
        out, m = data_mod.augment_wild(random.Random(seed), img, mask, cfg)
        assert out.size == (128, 128) and m.size == (128, 128)
        arr = np.asarray(m) > 127
        ys, xs = np.nonzero(arr)
        assert len(xs) > 0
        # the whole face is inside the crop: no face pixel touches the crop border
        assert xs.min() > 0 and ys.min() > 0 and xs.max() < 127 and ys.max() < 127, seed
        area0 = area0 or arr.sum()
    soft = data_mod.soften_mask(random.Random(0), m, cfg)
    s = np.asarray(soft, dtype=np.float32) / 255
    assert s.sum() < (np.asarray(m) > 127).sum()  # eroded
    assert ((s > 0.02) & (s < 0.98)).any()  # soft edge


# ----------------------------------------------------------------------------- perturbations
def _ws(n=4):
    return torch.stack([data_mod.load_wplus(E4E / f"{i}.pth") for i in range(1, n + 1)])


@pytest.mark.needs_shared
@pytest.mark.parametrize("kind", ["extrapolate", "scaled_copy", "noise"])
def test_perturbations_change_every_kept_row_and_keep_dropped_rows_zero(kind):
    w = _ws()
    dropped = torch.tensor([False, False, True, False])
    w[2] = 0
    out, got = perturb.perturb_wplus(w, dropped, random.Random(1), torch.Generator().manual_seed(1),
                                     [1, 1, 1, 1, 1], kind=kind)
    assert got == kind and out.shape == w.shape
    assert torch.count_nonzero(out[2]) == 0
    for r in (0, 1, 3):
        assert not torch.allclose(out[r], w[r])


@pytest.mark.needs_shared
def test_direction_perturbations_use_the_paper_directions():
    folder = OFFICIAL / "w_direction"
    bank = perturb.DirectionBank.from_folder(folder)
    assert len(bank.vectors) == 17 and len(bank.ganspace) > 10
    w = _ws(2)
    rng = random.Random(3)
    delta = bank.sample(w, rng, 60.0)
    assert delta.shape == w.shape and torch.isfinite(delta).all() and delta.abs().sum() > 0
    # GANSpace edits move the edited layers by (target - coordinate of layer 0) along the
    # component, in std units (the paper's get_delta)
    d = bank.ganspace[0]
    pca, first = d.pca, d.layers[0]
    coord = lambda x: ((x - pca.mean) @ pca.comp[d.component]) / pca.std[d.component]
    moved = w + d.delta(w, 7.0)
    assert torch.allclose(coord(moved[:, first]) - coord(w[:, first]), 7.0 - coord(w[:, 0]), atol=1e-3)
    assert torch.equal(moved[:, d.layers[1]:], w[:, d.layers[1]:])
    out, kind = perturb.perturb_wplus(w, torch.tensor([False, False]), random.Random(0),
                                      torch.Generator(), [0, 0, 0, 0, 1], bank)
    assert kind == "blend" and not torch.allclose(out, w)


def test_without_directions_only_code_perturbations_are_drawn():
    kinds = {perturb.choose_kind(random.Random(s), [0.45, 0.07, 0.13, 0.15, 0.2], False) for s in range(200)}
    assert kinds == {"extrapolate", "scaled_copy", "noise"}


# ----------------------------------------------------------------------------- losses
def test_disen_loss_ignores_the_face_region():
    pred = torch.zeros(1, 4, 8, 8)
    other = torch.zeros(1, 4, 8, 8)
    other[..., 2:6, 2:6] = 5.0  # differs only inside the face
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:48, 16:48] = 1.0
    outside = losses.outside_face(mask, (8, 8))
    assert losses.disen_loss(pred, other, outside).item() == 0.0
    other[..., 0, 0] = 1.0  # and now outside too
    assert losses.disen_loss(pred, other, outside).item() == pytest.approx(4 / (4 * 64))


def test_v_prediction_target():
    from diffusers import DDPMScheduler
    s = DDPMScheduler(prediction_type="v_prediction")
    x, n, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([10, 500])
    assert torch.allclose(losses.diffusion_target(s, x, n, t), s.get_velocity(x, n, t))
    s = DDPMScheduler()
    assert losses.diffusion_target(s, x, n, t) is n


# ----------------------------------------------------------------------------- ldm conversion
@pytest.mark.parametrize("variant", ["sd15", "sdxl"])
def test_diffusers_to_ldm_keys_reproduce_the_fixture(variant, shared_dir):
    from safetensors.torch import load_file

    from helpers.unet_convert import diffusers_to_ldm_unet
    d = FIXTURES / f"reference_{variant}"
    cfg = json.loads((d / "config.json").read_text())["diffusers_unet"]
    ours = diffusers_to_ldm_unet(load_file(str(d / "unet_diffusers.safetensors")), cfg,
                                 prefix="model.diffusion_model.")
    ref = load_file(str(d / "unet_ldm.safetensors"))
    assert set(ours) == set(ref)
    assert all(torch.equal(ours[k], ref[k]) for k in ref)


@pytest.mark.needs_shared
def test_a_batch_of_one_extrapolates_towards_another_identity():
    w, other = _ws(2)[:1], _ws(2)[1:]
    same, _ = perturb.perturb_wplus(w, torch.tensor([False]), random.Random(0), torch.Generator(),
                                    [1, 0, 0, 0, 0], kind="extrapolate")
    assert torch.equal(same, w)  # shuffling a batch of one changes nothing...
    out, _ = perturb.perturb_wplus(w, torch.tensor([False]), random.Random(0), torch.Generator(),
                                   [1, 0, 0, 0, 0], kind="extrapolate", others=other)
    assert not torch.allclose(out, w)  # ...so the trainer passes another identity


def test_bad_base_model_path_is_a_clear_error(tmp_path):
    (tmp_path / "m.jsonl").write_text("")
    r = subprocess.run([sys.executable, str(ROOT / "trainer" / "train.py"), "--pretrained-model",
                        str(tmp_path / "nope"), "--manifest", str(tmp_path / "m.jsonl"), "--output-dir",
                        str(tmp_path / "out"), "--report-to", "none"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "base model" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.needs_shared
def test_gradient_checkpointing_gives_the_same_gradients():
    """Stage II runs no-grad passes with other tokens before the grad pass; recomputation in
    backward must still see the grad pass's identity tokens."""
    from diffusers import UNet2DConditionModel

    import wplus
    from trainer.engine import TrainModel
    from trainer.tiny import TINY_UNET
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**TINY_UNET).requires_grad_(False)
    adapter = wplus.WPlusAdapter.from_unet(unet)
    model = TrainModel(unet, adapter)
    g = torch.Generator().manual_seed(0)
    x, ctx, w = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 32, generator=g), _ws(2)
    t = torch.tensor([5, 900])

    def grads():
        adapter.zero_grad(set_to_none=True)
        with torch.no_grad():
            model(x, t, ctx, w.flip(0) * 5, 1.0)
            model(x, t, ctx, w, 0.0)
        model(x, t, ctx, w, 1.0).square().mean().backward()
        return [p.grad.clone() for p in adapter.parameters()]

    unet.eval()
    plain = grads()
    unet.enable_gradient_checkpointing()
    unet.train()
    ckpt = grads()
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-5) for a, b in zip(plain, ckpt))
    model.handle.remove()


@pytest.mark.needs_shared
def test_worker_processes_give_the_same_batches(tmp_path):
    cfg = TrainConfig(stage=2, resolution=32, train_batch_size=2, num_workers=0)
    recs = data_mod.stage_records(data_mod.read_manifest(_manifest(tmp_path)), 2)
    a = next(iter(data_mod.make_loader(cfg, recs, 1, 0, start=3)))
    cfg.num_workers = 1
    b = next(iter(data_mod.make_loader(cfg, recs, 1, 0, start=3)))
    assert a["id"] == b["id"] and a["text"] == b["text"]
    assert torch.equal(a["pixels"], b["pixels"]) and torch.equal(a["face_mask"], b["face_mask"])


def test_unsafe_ckpt_pickles_are_refused_with_advice(tmp_path):
    import pickle

    from wplus.assets.checkpoint import read_checkpoint
    path = tmp_path / "model.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {}, "callbacks": random.Random()}, f, protocol=2)
    with pytest.raises(ValueError, match="safetensors"):
        read_checkpoint(path)
