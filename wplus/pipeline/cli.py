"""`python -m wplus generate`: the paper's pipeline on diffusers, from a photo, a saved identity or a seed.

List-valued --scale / --edit (`--scale 0,0.5,1`, `--edit smile=-2,0,2`) make one labelled grid, the same
scene (seed) in every cell: λ across the columns, the edit down the rows.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from wplus.errors import WPlusError
from wplus.pipeline.defaults import (
    DEFAULT_GUIDANCE,
    DEFAULT_MODEL,
    DEFAULT_SCALE,
    DEFAULT_SEED,
    DEFAULT_START,
    DEFAULT_STEPS,
    NEGATIVE_PROMPT,
    SCHEDULERS,
    check_scale,
    check_start,
)

EXAMPLES = f"""examples:
  wplus generate --photo me.jpg --prompt "a woman wearing a spacesuit" -o out.png      (downloads SD1.5, adapter, e4e)
  wplus generate --identity alice --prompt "portrait, oil painting" --scale 0,0.5,1 --score -o lambda.png
  wplus generate --identity alice --prompt "a photo" --edit smile=-2,0,2 --freeu -o smile.png
  wplus generate --model tiny-sd --adapter tiny-sd/wplus_adapter.safetensors \\
      --identity tiny-sd/identity.safetensors --prompt "a face" --steps 4 -o tiny.png      (no downloads)
Defaults are the paper's demo: Euler, {DEFAULT_STEPS} steps, guidance {DEFAULT_GUIDANCE}, λ {DEFAULT_SCALE:g}, \
start {DEFAULT_START:g} %, its negative prompt.
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    g = sub.add_parser(
        "generate", help="images of a person with Stable Diffusion + the W+ adapter (diffusers)",
        description="Generate images of the person in --photo / --identity / --random-identity with the "
                    "paper's W+ adapter pipeline on diffusers (SD1.x, SD2.x, SDXL).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"diffusers folder, WebUI checkpoint (.safetensors/.ckpt) or hub id (default {DEFAULT_MODEL})")
    g.add_argument("--original-config", default=None, metavar="YAML",
                   help="ldm/sgm config of a single-file checkpoint (default: the standard SD1/SD2/SDXL one)")
    g.add_argument("--adapter", default=None,
                   help="W+ adapter file or its name in the models folder (default: wplus_adapter.bin, downloaded)")
    who = g.add_mutually_exclusive_group(required=True)
    who.add_argument("--photo", type=Path, metavar="IMG", help="reference photo of the person")
    who.add_argument("--identity", metavar="NAME_OR_FILE", help="saved identity (name, .safetensors or N.pth)")
    who.add_argument("--random-identity", type=int, metavar="SEED", help="a fictional person from StyleGAN's seed")
    g.add_argument("--face-index", type=int, default=None, metavar="N",
                   help="with --photo: which face, 0 = leftmost (default: the largest)")
    g.add_argument("--backend", default="dlib", choices=("dlib", "facexlib", "auto"), help="face detector")
    g.add_argument("--prompt", required=True)
    g.add_argument("--negative-prompt", default=NEGATIVE_PROMPT, help="default: the paper's")
    g.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    g.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    g.add_argument("--scale", default=str(DEFAULT_SCALE), metavar="L[,L...]", help="λ; a list makes a grid")
    g.add_argument("--start", type=float, default=DEFAULT_START, help="%% of steps before the identity (default 20)")
    g.add_argument("--seed", type=int, default=DEFAULT_SEED)
    g.add_argument("--width", type=int, default=None, help="default: the model's size (512 for SD1.5)")
    g.add_argument("--height", type=int, default=None)
    g.add_argument("--num-images", type=int, default=1)
    g.add_argument("--edit", action="append", default=[], metavar="NAME=S[,S...]",
                   help="edit direction strength(s), repeatable; a list makes a grid row per value")
    g.add_argument("--mix-with", default=None, metavar="IDENTITY", help="second identity (name, file or seed:N)")
    g.add_argument("--mix", default="0.5", metavar="W|C/M/F", help="mix weight, or coarse/middle/fine weights")
    g.add_argument("--scheduler", default="euler", choices=tuple(SCHEDULERS))
    g.add_argument("--freeu", action="store_true", help="FreeU with the demo's values (s1 .6, s2 .4, b1 1.1, b2 1.2)")
    g.add_argument("--vae", default=None, help="another VAE (the paper's demo uses stabilityai/sd-vae-ft-mse)")
    g.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    g.add_argument("--dtype", default="auto", choices=("auto", "fp16", "fp32", "bf16"),
                   help="default: fp16 on CUDA, fp32 on the CPU")
    g.add_argument("--score", action="store_true",
                   help="rate each face against the reference (dlib face embedding; distance < 0.6 = same person)")
    g.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.png")
    g.add_argument("--models", type=Path, default=None, metavar="DIR",
                   help="models folder (default: $WPLUS_MODELS_DIR or the extension's models/)")
    g.add_argument("--no-download", action="store_true",
                   help="never download; fail with a message saying where to put the missing file")
    return g


@dataclass
class Plan:
    """The parsed, checked request: λ values × edit combinations."""

    scales: list[float]
    edit_rows: list[dict[str, float]] = field(default_factory=lambda: [{}])
    row_axis: str = ""  # the list-valued edit's name, if any
    fixed_edits: dict[str, float] = field(default_factory=dict)
    mix: float | tuple[float, float, float] = 0.5


def parse_numbers(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise WPlusError(f"{what} {text!r}: expected a number or a comma-separated list") from None
    if not values:
        raise WPlusError(f"{what} is empty")
    return values


def make_plan(args: argparse.Namespace) -> Plan:
    scales = [check_scale(v) for v in parse_numbers(args.scale, "--scale")]
    check_start(args.start)
    for name, value, low in (("--steps", args.steps, 1), ("--num-images", args.num_images, 1)):
        if value < low:
            raise WPlusError(f"{name} must be >= {low}; got {value}")
    for name in ("width", "height"):
        v = getattr(args, name)
        if v is not None and (v < 8 or v % 8):
            raise WPlusError(f"--{name} must be a positive multiple of 8; got {v}")
    if args.face_index is not None and args.photo is None:
        raise WPlusError("--face-index goes with --photo")
    fixed, axes = {}, []
    for item in args.edit:
        name, sep, values = item.partition("=")
        if not sep or not name.strip():
            raise WPlusError(f"--edit {item!r}: expected NAME=STRENGTH, e.g. smile=2 or smile=-2,0,2")
        numbers = parse_numbers(values, f"--edit {name.strip()}")
        if len(numbers) == 1:
            fixed[name.strip()] = numbers[0]
        else:
            axes.append((name.strip(), numbers))
    if len(axes) > 1:
        raise WPlusError("only one --edit may list several values (it makes the grid's rows)")
    plan = Plan(scales, fixed_edits=fixed)
    if axes:
        plan.row_axis = axes[0][0]
        plan.edit_rows = [{plan.row_axis: v} for v in axes[0][1]]
    mix = parse_numbers(args.mix.replace("/", ","), "--mix")
    if len(mix) not in (1, 3) or not all(0 <= m <= 1 for m in mix):
        raise WPlusError(f"--mix {args.mix!r}: one weight 0..1, or coarse/middle/fine weights")
    plan.mix = mix[0] if len(mix) == 1 else (mix[0], mix[1], mix[2])
    return plan


def main(args: argparse.Namespace, e4e_loader: Callable[[], Any] | None = None) -> int:
    from wplus.pipeline.session import run_generate

    plan = make_plan(args)  # bad arguments fail here, before anything heavy loads
    t0 = time.perf_counter()
    result = run_generate(args, plan, e4e_loader=e4e_loader)
    for line in result.lines:
        print(line)
    print(f"saved {result.path} ({len(result.images)} image{'s' if len(result.images) != 1 else ''}, "
          f"{time.perf_counter() - t0:.1f} s)")
    return 0


def cells(plan: Plan) -> list[tuple[int, int, float, dict[str, float]]]:
    """(row, column, λ, edits) of every grid cell, rows = edit values, columns = λ values."""
    return [(i, j, scale, {**plan.fixed_edits, **row})
            for (i, row), (j, scale) in itertools.product(enumerate(plan.edit_rows), enumerate(plan.scales))]


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
