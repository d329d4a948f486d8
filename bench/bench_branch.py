"""Cost of the W+ branch on a full-size SD1.5 UNet (random weights), measured in one run.

Prints the step time with the branch attached vs. the plain UNet, and the branch's extra-FLOP share
(the physical floor of its overhead). Target: extra time <= 1.25 x extra FLOPs. Plain and branch
steps are interleaved; min, median and spread are printed, and the verdict says NOISE or
INCONCLUSIVE when the machine's load moved the runs more than the overhead being measured.

    .venv/bin/python bench/bench_branch.py [--device cuda] [--repeats 3] [--size 64] [--batch 2]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import timing  # noqa: E402  (bench/timing.py)

import wplus  # noqa: E402

SD15_UNET = dict(
    image_size=64, in_channels=4, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1],
    num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_heads=8, use_spatial_transformer=True,
    transformer_depth=1, context_dim=768, use_checkpoint=False, legacy=False,
)


def build(device: str, dtype: torch.dtype):
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    torch.manual_seed(0)
    unet = UNetModel(**SD15_UNET).to(device, dtype).eval()
    adapter = wplus.WPlusAdapter.from_unet(unet)
    return unet, adapter


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=64, help="latent side (64 = 512x512 images)")
    parser.add_argument("--batch", type=int, default=2, help="UNet rows (2 = one image with CFG)")
    args = parser.parse_args()
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    unet, adapter = build(args.device, dtype)
    x = torch.randn(args.batch, 4, args.size, args.size, device=args.device, dtype=dtype)
    t = torch.full((args.batch,), 500, device=args.device)
    ctx = torch.randn(args.batch, 77, 768, device=args.device, dtype=dtype)
    w = torch.randn(1, 18, 512, device=args.device, dtype=dtype)
    run = lambda: unet(x, t, context=ctx)

    with torch.no_grad():
        plain_flops = flops(run)
        handle = wplus.attach(unet, adapter)
        half = max(1, args.batch // 2)  # CFG layout: cond rows, then uncond rows
        handle.tokens = torch.cat([adapter.project(w).expand(half, -1, -1), adapter.zero_tokens(args.batch - half)])
        branch_flops = flops(run)
        sync = torch.cuda.synchronize if args.device == "cuda" else None

        def plain():
            handle.scale = 0.0  # scale 0 skips the branch entirely
            run()

        def branch():
            handle.scale = 1.0
            run()

        # interleaved (plain, branch, plain, branch …) so load changes hit both alike
        stats = timing.interleaved({"plain": plain, "branch": branch}, args.repeats, sync=sync)
        handle.remove()

    cmp = timing.Comparison(stats["plain"], stats["branch"])
    flop_share = branch_flops / plain_flops - 1
    print(f"device={args.device} dtype={dtype} latent={args.size}x{args.size} batch={args.batch} "
          f"threads={torch.get_num_threads()} repeats={args.repeats} (interleaved)")
    print(f"plain UNet step      {stats['plain'].line(1e3, 'ms')}   ({plain_flops / 1e12:.3f} TFLOP)")
    print(f"with W+ branch step  {stats['branch'].line(1e3, 'ms')}   ({branch_flops / 1e12:.3f} TFLOP)")
    print(f"overhead             min {cmp.extra_min * 100:+.2f} %  median {cmp.extra_median * 100:+.2f} %")
    print(f"FLOP floor           {flop_share * 100:+.2f} %")
    print(cmp.verdict(floor=flop_share, target=1.25))


if __name__ == "__main__":
    main()
