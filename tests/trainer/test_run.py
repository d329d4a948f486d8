"""End-to-end training on a tiny SD model built from configs (real diffusers/transformers classes,
real CLIP tokenizer) and the paper's real test photos with their W+ codes, all on CPU.

`python trainer/train.py` runs as a subprocess for Stage I (two data-parallel processes, as under
`accelerate launch`) and Stage II (one process); Stage II is then resumed
from its mid-run checkpoint; an in-process run overfits one batch and checks the exported adapter
against the trainer's own model on the diffusers UNet and on the equivalent ldm UNet.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from conftest import FIXTURES, OFFICIAL, ROOT

E4E = OFFICIAL / "test_data" / "e4e"
DIRECTIONS = OFFICIAL / "w_direction"
RES = 64

pytestmark = pytest.mark.needs_shared


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from trainer.tiny import build_tiny_sd
    root = tmp_path_factory.mktemp("train")
    build_tiny_sd(root / "sd")
    data = root / "data"
    data.mkdir()
    mask = Image.new("L", (512, 512), 0)
    ImageDraw.Draw(mask).ellipse((150, 110, 370, 420), fill=255)  # the aligned faces' face region
    mask.save(data / "face_mask.png")
    with open(data / "manifest.jsonl", "w") as f:
        for i in range(1, 6):
            shutil.copy(E4E / f"{i}.png", data / f"{i}.png")
            shutil.copy(E4E / f"{i}.pth", data / f"{i}.pth")
            f.write(json.dumps({"id": str(i), "aligned": f"{i}.png", "wplus": f"{i}.pth", "wild": f"{i}.png",
                                "wild_mask": "face_mask.png", "captions": ["a person smiling"]}) + "\n")
    return root


def _common(work, out, stage, steps, *extra):
    return ["--stage", str(stage), "--pretrained-model", str(work / "sd"), "--manifest",
            str(work / "data" / "manifest.jsonl"), "--resolution", str(RES), "--train-batch-size", "2",
            "--max-steps", str(steps), "--mixed-precision", "no", "--output-dir", str(out),
            "--no-progress", "--learning-rate", "1e-3", *extra]


def _train(args, processes=1):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    # torch.distributed.run sets the environment `accelerate launch` sets: DDP (gloo on CPU)
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    launch = launch if processes > 1 else []
    r = subprocess.run([sys.executable, *launch, "trainer/train.py", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(work):
    """Stage I in two data-parallel processes (1 image each), Stage II in one process (2 images);
    then Stage II resumed (in-process) from its step-2 checkpoint."""
    s1, s2, s2r = work / "stage1", work / "stage2", work / "stage2_resumed"
    args = _common(work, s1, 1, 4, "--checkpoint-every", "2", "--validation-every", "4",
                   "--validation-steps", "2", "--validation-seeds", "0")
    args[args.index("--train-batch-size") + 1] = "1"
    r = _train(args, processes=2)
    assert "2 process(es)" in r.stdout + r.stderr
    stage2 = ["--init", str(s1 / "wplus_adapter.safetensors"), "--checkpoint-every", "2", "--export-official",
              "--i-drop-rate", "0.2"]
    if DIRECTIONS.is_dir():
        stage2 += ["--directions", str(DIRECTIONS)]
    _train(_common(work, s2, 2, 4, *stage2))
    (s2r / "checkpoints").mkdir(parents=True)
    shutil.copytree(s2 / "checkpoints" / "step-0000002", s2r / "checkpoints" / "step-0000002")
    from trainer.config import parse_config
    from trainer.engine import run
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses (OMP_NUM_THREADS=1): same float reduction order
    try:
        resumed = run(parse_config(_common(work, s2r, 2, 4, *stage2, "--resume", "latest", "--report-to", "none")))
    finally:
        torch.set_num_threads(threads)
    return s1, s2, s2r, resumed


def test_stage1_runs_checkpoints_logs_and_validates(runs):
    s1 = runs[0]
    m = _metrics(s1)  # written once, by the main process, losses averaged over both processes
    assert [r["step"] for r in m] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(r["loss"])) and r["loss"] == r["rec"] for r in m)
    assert sorted(p.name for p in (s1 / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]
    assert list((s1 / "logs").rglob("events.out.tfevents.*"))
    sample = Image.open(s1 / "samples" / "step-0000004.png")
    assert sample.size == (2 * RES, RES)  # two prompts x one seed


def test_stage2_freezes_the_projection_bit_identically(runs):
    s1, s2, _, _ = runs
    before, after = load_file(str(s1 / "wplus_adapter.safetensors")), load_file(str(s2 / "wplus_adapter.safetensors"))
    assert before.keys() == after.keys()
    proj = [k for k in before if k.startswith("proj.")]
    assert proj and all(torch.equal(before[k], after[k]) for k in proj)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("layers."))
    m = _metrics(s2)
    for r in m:
        for k in ("rec", "disen", "preserve", "loss"):
            assert torch.isfinite(torch.tensor(r[k])), r
        assert r["loss"] == pytest.approx(r["rec"] + 2.0 * r["disen"] + 1.0 * r["preserve"], rel=1e-5)
    assert any(r["disen"] > 0 for r in m) and any(r["preserve"] > 0 for r in m)


def test_official_bin_export_matches_ours(runs):
    import wplus
    s2 = runs[1]
    a, b = wplus.load_adapter(s2 / "wplus_adapter.safetensors"), wplus.load_adapter(s2 / "wplus_adapter.bin")
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_continues_at_the_same_step_with_the_same_losses(runs):
    _, s2, s2r, _ = runs
    full, resumed = _metrics(s2), _metrics(s2r)
    assert [r["step"] for r in resumed] == [3, 4]
    for a, b in zip(full[2:], resumed):
        for k in ("loss", "rec", "disen", "preserve", "lr"):
            assert a[k] == b[k], (k, a, b)
    fa, fb = load_file(str(s2 / "wplus_adapter.safetensors")), load_file(str(s2r / "wplus_adapter.safetensors"))
    assert all(torch.equal(fa[k], fb[k]) for k in fa)


# ----------------------------------------------------------------------------- in-process
@pytest.fixture(scope="module")
def overfit(work):
    from trainer.config import TrainConfig
    from trainer.engine import run
    cfg = TrainConfig(
        stage=1, pretrained_model=str(work / "sd"), manifest=str(work / "data" / "manifest.jsonl"),
        resolution=RES, train_batch_size=2, max_steps=10, learning_rate=1e-2, mixed_precision="no",
        output_dir=str(work / "overfit"), overfit_batch=True, i_drop_rate=0, t_drop_rate=0, ti_drop_rate=0,
        report_to="none", progress=False, checkpoint_every=0,
    )
    return run(cfg)


def test_rec_loss_falls_when_overfitting_one_batch(overfit):
    # Same images, prompts, noise and timesteps every step: the loss must go down step after step.
    # (The tiny UNet's random weights cap how far the identity branch alone can fit the noise.)
    rec = [h["rec"] for h in overfit.history]
    assert len(rec) == 10 and all(torch.isfinite(torch.tensor(rec)))
    falls = sum(b < a for a, b in zip(rec, rec[1:]))
    assert falls >= 8 and sum(rec[-4:]) / 4 < sum(rec[:4]) / 4 - 0.03 and rec[-1] < rec[0] - 0.05, rec


def _inputs(context_dim):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([10, 700])
    ctx = torch.randn(2, 77, context_dim, generator=g)
    w = torch.stack([torch.load(E4E / f"{i}.pth", weights_only=True, map_location="cpu")[0] for i in (1, 2)])
    return x, t, ctx, w.detach()


def test_exported_adapter_matches_the_trainer_on_diffusers_and_ldm(overfit, work):
    from diffusers import UNet2DConditionModel

    import wplus
    from helpers.unet_convert import diffusers_to_ldm_unet
    model = overfit.accelerator.unwrap_model(overfit.model)
    x, t, ctx, w = _inputs(model.adapter.context_dim)
    with torch.no_grad():
        ours = model(x, t, ctx, w, 0.7)
    exported = wplus.load_adapter(work / "overfit" / "wplus_adapter.safetensors")
    unet = UNet2DConditionModel.from_pretrained(work / "sd", subfolder="unet").eval()
    with torch.no_grad(), wplus.attach(unet, exported) as h:
        h.tokens = exported.project(w)
        h.scale = 0.7
        theirs = unet(x, t, encoder_hidden_states=ctx).sample
    assert (theirs - ours).abs().max().item() < 1e-5
    # ... and on the WebUI's ldm UNet, converted from the same diffusers weights
    from ldm.modules.diffusionmodules.openaimodel import UNetModel
    cfg = json.loads((FIXTURES / "reference_sd15" / "config.json").read_text())["ldm_unet"]
    ldm = UNetModel(**cfg).eval()
    ldm.load_state_dict(diffusers_to_ldm_unet(unet.state_dict(), unet.config), strict=True)
    with torch.no_grad(), wplus.attach(ldm, exported) as h:
        h.tokens = exported.project(w)
        h.scale = 0.7
        eps = ldm(x, t, context=ctx)
    assert (eps - ours).abs().max().item() < 1e-4
    # the branch matters: the comparison is not between two plain UNets
    with torch.no_grad():
        plain = unet(x, t, encoder_hidden_states=ctx).sample
    assert (plain - ours).abs().max().item() > 1e-3



def test_export_cli_from_a_checkpoint(runs, tmp_path):
    import wplus
    from trainer.export import main
    ckpt = runs[1] / "checkpoints" / "step-0000004"
    assert main([str(ckpt), str(tmp_path), "--official", "--half"]) == 0
    half = load_file(str(tmp_path / "wplus_adapter.safetensors"))
    full = load_file(str(ckpt / "wplus_adapter.safetensors"))
    assert all(half[k].dtype == torch.float16 and torch.equal(half[k], full[k].half()) for k in full)
    official = torch.load(tmp_path / "wplus_adapter.bin", weights_only=True)
    assert set(official) == {"w_proj", "wplus_adapter"} and "1.to_q_wplus.weight" in official["wplus_adapter"]
    assert wplus.load_adapter(tmp_path / "wplus_adapter.bin").context_dim == 32
    assert main([str(tmp_path / "missing"), str(tmp_path)]) == 2


def test_mixed_precision_keeps_fp32_adapter_weights(runs, work):
    """bf16 autocast (what fp16/bf16 do on GPUs, here on CPU): frozen models in bf16, adapter in fp32."""
    from trainer.config import TrainConfig
    from trainer.engine import run
    init = runs[0] / "wplus_adapter.safetensors"
    tr = run(TrainConfig(stage=2, init=str(init), pretrained_model=str(work / "sd"),
                         manifest=str(work / "data" / "manifest.jsonl"), resolution=RES, train_batch_size=2,
                         max_steps=2, mixed_precision="bf16", output_dir=str(work / "bf16"), report_to="none",
                         progress=False, checkpoint_every=0, validation_every=2, validation_steps=2))
    assert tr.base.unet.dtype == torch.bfloat16 and all(p.dtype == torch.float32 for p in tr.adapter.parameters())
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in tr.history)
    before, after = load_file(str(init)), load_file(str(work / "bf16" / "wplus_adapter.safetensors"))
    assert all(after[k].dtype == torch.float32 for k in after)
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("proj."))
    assert (work / "bf16" / "samples" / "step-0000002.png").is_file()
