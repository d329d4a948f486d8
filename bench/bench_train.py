"""Training step time per image, Stage I and Stage II, for a tiny and an SD1.5-size UNet.

Stage I step = one UNet forward with the W+ branch + backward + AdamW step on the adapter.
Stage II step = two no-grad forwards (perturbed W+, branch off) + the same grad step.
The UNet rows time UNet + adapter only (the frozen VAE/text encoder run without grad and are
model-specific); the "tiny full step" row runs the trainer's whole step (VAE encode, CLIP, noise,
UNet, losses) on the tiny diffusers model. Random weights; numbers measured in one run.

    .venv/bin/python bench/bench_train.py [--device cpu|cuda] [--steps 2] [--sd15-res 512] [--skip-sd15]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import timing  # noqa: E402  (bench/timing.py)

SD15 = dict(  # runwayml/stable-diffusion-v1-5 unet/config.json
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=[320, 640, 1280, 1280],
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, cross_attention_dim=768, attention_head_dim=8,
)


def unet_rows(name: str, cfg: dict, res: int, batch: int, steps: int, device: str, dtype: torch.dtype) -> list[dict]:
    from diffusers import UNet2DConditionModel

    import wplus
    from trainer.engine import TrainModel
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**cfg).to(device, dtype).eval().requires_grad_(False)
    adapter = wplus.WPlusAdapter.from_unet(unet).float().to(device)
    model = TrainModel(unet, adapter)
    opt = torch.optim.AdamW(adapter.parameters(), lr=1e-4)
    side = res // 8
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 4, side, side, generator=g).to(device, dtype)
    noise = torch.randn(batch, 4, side, side, generator=g).to(device, dtype)
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    ctx = torch.randn(batch, 77, cfg["cross_attention_dim"], generator=g).to(device, dtype)
    w = torch.randn(batch, 18, 512, generator=g).to(device)

    def stage1():
        loss = F.mse_loss(model(x, t, ctx, w, 1.0).float(), noise.float())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def stage2():
        with torch.no_grad():
            neg = model(x, t, ctx, w.flip(0) * 3, 1.0)
            off = model(x, t, ctx, w, 0.0)
        pred = model(x, t, ctx, w, 1.0).float()
        loss = F.mse_loss(pred, noise.float()) + 2 * F.mse_loss(pred, neg.float()) + F.mse_loss(pred, off.float())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    params = sum(p.numel() for p in unet.parameters()) / 1e6
    trainable = sum(p.numel() for p in adapter.parameters()) / 1e6
    rows = []
    for stage, fn in (("I", stage1), ("II", stage2)):
        per = timed(fn, steps, device) / batch
        rows.append({"model": f"{name} UNet ({params:.0f}M, adapter {trainable:.2f}M)", "stage": stage,
                     "res": res, "batch": batch, "s_per_image": per,
                     "spread": SPREADS[-1]})
    model.handle.remove()
    return rows


def timed(fn, steps: int, device: str) -> float:
    """Median seconds per step after one warm-up (min and spread are kept for the table)."""
    fn()  # warm-up
    stats = timing.repeated(fn, steps, sync=lambda: sync(device))
    SPREADS.append(stats.spread)
    return stats.median


SPREADS: list[float] = []  # of every timed row, in order


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def full_tiny_rows(steps: int, device: str) -> list[dict]:
    """The trainer's complete step on the tiny diffusers model and the real test photos."""
    from trainer import data as data_mod
    from trainer.config import TrainConfig
    from trainer.engine import Trainer
    from trainer.tiny import build_tiny_sd
    e4e = ROOT.parent / "shared" / "data" / "official" / "test_data" / "e4e"
    if not e4e.is_dir():
        return []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_tiny_sd(tmp / "sd")
        from PIL import Image, ImageDraw
        m = Image.new("L", (512, 512), 0)
        ImageDraw.Draw(m).ellipse((150, 110, 370, 420), fill=255)
        m.save(tmp / "mask.png")
        (tmp / "m.jsonl").write_text("".join(json.dumps({
            "id": str(i), "aligned": str(e4e / f"{i}.png"), "wplus": str(e4e / f"{i}.pth"),
            "wild": str(e4e / f"{i}.png"), "wild_mask": str(tmp / "mask.png"), "captions": ["a person"]}) + "\n"
            for i in range(1, 6)))
        from diffusers import UNet2DConditionModel

        import wplus
        init = tmp / "init.safetensors"
        unet = UNet2DConditionModel.from_pretrained(tmp / "sd", subfolder="unet")
        wplus.save_adapter(wplus.WPlusAdapter.from_unet(unet), init)
        for stage in (1, 2):
            cfg = TrainConfig(stage=stage, init=str(init) if stage == 2 else None, pretrained_model=str(tmp / "sd"),
                              manifest=str(tmp / "m.jsonl"), resolution=64, train_batch_size=2,
                              mixed_precision="no", output_dir=str(tmp / "o"), report_to="none", progress=False)
            tr = Trainer(cfg).setup()
            loader = iter(data_mod.make_loader(cfg, data_mod.stage_records(data_mod.read_manifest(cfg.manifest), stage),
                                               1, 0, 0))
            state = {"micro": 0}

            def step():
                batch = next(loader)
                parts = tr.compute_losses(batch, state["micro"])
                parts["loss"].backward()
                tr.optimizer.step()
                tr.optimizer.zero_grad(set_to_none=True)
                state["micro"] += 1

            rows.append({"model": "tiny full step (VAE+CLIP+UNet)", "stage": "I" if stage == 1 else "II",
                         "res": 64, "batch": 2, "s_per_image": timed(step, steps, device) / 2,
                         "spread": SPREADS[-1]})
            tr.model.handle.remove()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up")
    ap.add_argument("--sd15-res", type=int, default=512, help="image side for the SD1.5-size UNet (latent = res/8)")
    ap.add_argument("--sd15-batch", type=int, default=1)
    ap.add_argument("--skip-sd15", action="store_true")
    args = ap.parse_args()
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    from trainer.tiny import TINY_UNET
    print(f"# bench_train: torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), "
          f"{platform.processor() or platform.machine()}, "
          f"frozen UNet in {str(dtype).replace('torch.', '')}, adapter fp32, AdamW, {args.steps} timed steps")
    rows = unet_rows("tiny", TINY_UNET, 64, 2, args.steps, args.device, dtype)
    if args.device == "cpu":
        rows += full_tiny_rows(args.steps, args.device)
    if not args.skip_sd15:
        rows += unet_rows("SD1.5-size", SD15, args.sd15_res, args.sd15_batch, args.steps, args.device, dtype)
    print(f"{'model':<44} {'stage':>5} {'res':>5} {'batch':>5} {'s/image':>10} {'images/s':>9}")
    for r in rows:
        print(f"{r['model']:<44} {r['stage']:>5} {r['res']:>5} {r['batch']:>5} {r['s_per_image']:>10.4f} "
              f"{1 / r['s_per_image']:>9.2f}  spread {r['spread'] * 100:.0f}%")
    by = {}
    for r in rows:
        by.setdefault(r["model"], {})[r["stage"]] = r["s_per_image"]
    for model, s in by.items():
        if "I" in s and "II" in s:
            print(f"Stage II / Stage I step time, {model}: {s['II'] / s['I']:.2f}x")


if __name__ == "__main__":
    main()
