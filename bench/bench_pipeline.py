"""Time per image of the standalone diffusers pipeline with the W+ branch vs without it, in one run.

Plain and branch images alternate (plain, branch, plain, branch …) with the same seed and settings;
min, median and spread of each are printed and the overhead is judged against the noise band
(see bench/timing.py). Default model: the tiny SD of `python -m trainer.tiny` (built in a temporary
folder, no downloads); `--model` takes any diffusers folder / checkpoint / hub id with `--adapter`.

    .venv/bin/python bench/bench_pipeline.py [--model DIR --adapter FILE] [--steps 30] [--repeats 5] [--device cuda]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import timing  # noqa: E402  (bench/timing.py)

from wplus.pipeline import attach  # noqa: E402
from wplus.pipeline.load import load_pipeline  # noqa: E402
from wplus.pipeline.sampling import Settings, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: a tiny SD built by trainer.tiny")
    parser.add_argument("--adapter", default=None, help="with --model: its W+ adapter file")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=None, help="image side (default: the model's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    tmp = tempfile.TemporaryDirectory()
    model, adapter = args.model, args.adapter
    if model is None:
        from trainer.tiny import build_tiny_sd, write_tiny_extras

        model = str(build_tiny_sd(Path(tmp.name) / "tiny-sd"))
        adapter, _ = write_tiny_extras(model)
    if adapter is None:
        parser.error("--model needs --adapter")
    pipe = load_pipeline(model, device=args.device)
    pipe.set_progress_bar_config(disable=True)
    settings = Settings(prompt="a photo of a person", steps=args.steps, width=args.size, height=args.size)
    w = torch.randn(1, 18, 512, generator=torch.Generator().manual_seed(0))
    sync = torch.cuda.synchronize if args.device == "cuda" else None
    branch = attach(pipe, adapter, w)
    with torch.no_grad(), branch:
        def plain():
            branch.scale = 0.0  # λ = 0: the plain pipeline exactly (no branch work at all)
            run(pipe, settings)

        def with_branch():
            branch.scale = 1.0
            run(pipe, settings)

        stats = timing.interleaved({"plain": plain, "branch": with_branch}, args.repeats, sync=sync)
    cmp = timing.Comparison(stats["plain"], stats["branch"])
    print(f"model={Path(model).name} device={args.device} dtype={pipe.unet.dtype} steps={args.steps} "
          f"threads={torch.get_num_threads()} repeats={args.repeats} (interleaved, branch on after 20 %)")
    print(f"plain pipeline, per image   {stats['plain'].line()}")
    print(f"with W+ branch, per image   {stats['branch'].line()}")
    print(f"overhead                    min {cmp.extra_min * 100:+.2f} %  median {cmp.extra_median * 100:+.2f} %")
    print(cmp.verdict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
