"""`generate`: the paper's pipeline on diffusers, from a photo, a saved identity or a seed.

List-valued --scale / --edit (`--scale 0,0.5,1`, `--edit smile=-2,0,2`) make one labelled grid, the same
scene (seed) in every cell: λ across the columns, the edit down the rows. Everything the user typed is
checked first, with the option schema's limits (the WebUI's), then every missing file is named at
once, and only then is anything heavy loaded.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

from wplus.cli.parser import (
    add_device,
    add_edit,
    add_face,
    add_models,
    check_edit_names,
    check_flag,
    models_dir,
    read_photo,
)
from wplus.errors import WPlusError
from wplus.generation.options import MixMode, Source
from wplus.generation.request import Request
from wplus.generation.settings import Settings
from wplus.pipeline.defaults import (
    DEFAULT_GUIDANCE,
    DEFAULT_MODEL,
    DEFAULT_SCALE,
    DEFAULT_SEED,
    DEFAULT_START,
    DEFAULT_STEPS,
    NEGATIVE_PROMPT,
    SCHEDULERS,
)
from wplus.pipeline.grid import Plan, cells

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
EXAMPLES = """examples:
  {prog} generate --photo me.jpg --prompt "a woman wearing a spacesuit" -o out.png      (downloads SD1.5, adapter, e4e)
  {prog} generate --identity alice --prompt "portrait, oil painting" --scale 0,0.5,1 --score -o lambda.png
  {prog} generate --identity alice --prompt "a photo" --edit smile=-2,0,2 --freeu -o smile.png
  {prog} generate --model tiny-sd --adapter tiny-sd/wplus_adapter.safetensors \\
      --identity tiny-sd/identity.safetensors --prompt "a face" --steps 4 -o tiny.png      (no downloads)
Defaults are the paper's demo: Euler, {steps} steps, guidance {guidance}, λ {scale:g}, start {start:g} %
(the branch is off while the step index is at or below int(start/100 · steps), at most 30), its negative prompt.
"""


def add_parser(sub: Any, prog: str) -> argparse.ArgumentParser:
    g = sub.add_parser(
        "generate", help="images of a person with Stable Diffusion + the W+ adapter (diffusers)",
        description="Generate images of the person in --photo / --identity / --random-identity with the "
                    "paper's W+ adapter pipeline on diffusers (SD1.x, SD2.x, SDXL).",
        epilog=EXAMPLES.format(prog=prog, steps=DEFAULT_STEPS, guidance=DEFAULT_GUIDANCE, scale=DEFAULT_SCALE,
                               start=DEFAULT_START),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_flags(g)
    who = g.add_mutually_exclusive_group(required=True)
    who.add_argument("--photo", type=Path, metavar="IMG", help="reference photo of the person")
    who.add_argument("--identity", metavar="NAME_OR_FILE", help="saved identity (name, .safetensors or N.pth)")
    who.add_argument("--random-identity", type=int, metavar="SEED", help="a fictional person from StyleGAN's seed")
    add_face(g, with_photo="with --photo: ")
    _sampling_flags(g)
    add_edit(g, lists=True)
    g.add_argument("--mix-with", default=None, metavar="IDENTITY", help="second identity (name, file, photo or seed:N)")
    g.add_argument("--mix", default="0.5", metavar="W|C/M/F", help="mix weight, or coarse/middle/fine weights")
    g.add_argument("--score", action="store_true",
                   help="rate each face against the reference (dlib face embedding; distance < 0.6 = same person)")
    g.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.png")
    add_device(g)
    add_models(g)
    g.set_defaults(run=run, prog=prog)
    return g


def _model_flags(g: argparse.ArgumentParser) -> None:
    g.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"diffusers folder, WebUI checkpoint (.safetensors/.ckpt) or hub id (default {DEFAULT_MODEL})")
    g.add_argument("--original-config", default=None, metavar="YAML",
                   help="ldm/sgm config of a single-file checkpoint (default: the standard SD1/SD2/SDXL one)")
    g.add_argument("--adapter", default=None,
                   help="W+ adapter file or its name in the models folder (default: wplus_adapter.bin, downloaded)")
    g.add_argument("--vae", default=None, help="another VAE (the paper's demo uses stabilityai/sd-vae-ft-mse)")
    g.add_argument("--dtype", default="auto", choices=("auto", "fp16", "fp32", "bf16"),
                   help="default: fp16 on CUDA, fp32 on the CPU")


def _sampling_flags(g: argparse.ArgumentParser) -> None:
    g.add_argument("--prompt", required=True)
    g.add_argument("--negative-prompt", default=NEGATIVE_PROMPT, help="default: the paper's")
    g.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    g.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    g.add_argument("--scale", default=str(DEFAULT_SCALE), metavar="L[,L...]", help="λ, 0..4; a list makes a grid")
    g.add_argument("--start", type=float, default=DEFAULT_START,
                   help="%% of the steps before the identity is injected (default 20; see below)")
    g.add_argument("--seed", type=int, default=DEFAULT_SEED)
    g.add_argument("--width", type=int, default=None, help="default: the model's size (512 for SD1.5)")
    g.add_argument("--height", type=int, default=None)
    g.add_argument("--num-images", type=int, default=1)
    g.add_argument("--scheduler", default="euler", choices=tuple(SCHEDULERS))
    g.add_argument("--freeu", action="store_true", help="FreeU with the demo's values (s1 .6, s2 .4, b1 1.1, b2 1.2)")


def run(args: argparse.Namespace, e4e_loader: Callable[[], Any] | None = None) -> int:
    from wplus.pipeline.load import model_kind
    from wplus.pipeline.session import check_files, run_generate

    t0 = time.perf_counter()
    plan = make_plan(args)  # what was typed: syntax and the schema's limits
    request = make_request(args, plan)
    model_kind(args.model)
    settings = Settings(models_dir(args), face_backend=args.backend, unload_encoder=False,
                        auto_download=not args.no_download, downloads_off="--no-download was given")
    e4e_needed = e4e_loader is None and _needs_e4e(args)
    check_files(args, settings, e4e_needed, bool(plan.edit_names()))  # every missing file at once
    if plan.edit_names():
        from wplus.stylegan.directions import default_library

        library = default_library(settings.models_dir, allow_download=settings.auto_download)
        for _, _, _, edits in cells(plan):
            check_edit_names(edits, library)  # unknown names (with suggestions), strengths out of range
    result = run_generate(args, plan, request, settings, e4e_loader)
    for line in result.lines:
        print(line)
    print(f"saved {result.path} ({len(result.images)} image{'s' if len(result.images) != 1 else ''}, "
          f"{time.perf_counter() - t0:.1f} s)")
    return 0


def _needs_e4e(args: argparse.Namespace) -> bool:
    return (args.photo is not None or args.random_identity is not None or bool(args.mix_with)
            or (args.score and args.identity is not None))


def make_plan(args: argparse.Namespace) -> Plan:
    """The grid from the flags, every value checked (the WebUI's limits for λ, start and face index)."""
    _check_numbers(args)
    plan = Plan([check_flag("scale", v, "--scale") for v in parse_numbers(args.scale, "--scale")])
    plan.fixed_edits, axes = _parse_edits(args.edit)
    if len(axes) > 1:
        raise WPlusError("only one --edit may list several values (it makes the grid's rows)")
    if axes:
        plan.row_axis = axes[0][0]
        plan.edit_rows = [{plan.row_axis: v} for v in axes[0][1]]
    plan.mix = _parse_mix(args.mix)
    return plan


def _check_numbers(args: argparse.Namespace) -> None:
    check_flag("start", args.start, "--start")
    for name, value, low in (("--steps", args.steps, 1), ("--num-images", args.num_images, 1)):
        if value < low:
            raise WPlusError(f"{name} must be >= {low}; got {value}")
    for name in ("width", "height"):
        v = getattr(args, name)
        if v is not None and (v < 8 or v % 8):
            raise WPlusError(f"--{name} must be a positive multiple of 8; got {v}")
    if args.face_index is not None:
        if args.photo is None:
            raise WPlusError("--face-index goes with --photo")
        check_flag("face_index", args.face_index, "--face-index")
    if args.random_identity is not None:
        check_flag("seed", args.random_identity, "--random-identity")
    if args.photo is not None:
        read_photo(args.photo, "--photo")


def parse_numbers(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise WPlusError(f"{what} {text!r}: expected a number or a comma-separated list") from None
    if not values:
        raise WPlusError(f"{what} is empty")
    return values


def _parse_edits(items: list[str]) -> tuple[dict[str, float], list[tuple[str, list[float]]]]:
    fixed, axes = {}, []
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not name.strip():
            raise WPlusError(f"--edit {item!r}: expected NAME=STRENGTH, e.g. smile=2 or smile=-2,0,2")
        numbers = parse_numbers(values, f"--edit {name.strip()}")
        if len(numbers) == 1:
            fixed[name.strip()] = numbers[0]
        else:
            axes.append((name.strip(), numbers))
    return fixed, axes


def _parse_mix(text: str) -> float | tuple[float, float, float]:
    mix = parse_numbers(text.replace("/", ","), "--mix")
    if len(mix) not in (1, 3):
        raise WPlusError(f"--mix {text!r}: one weight 0..1, or coarse/middle/fine weights")
    mix = [check_flag("mix", m, "--mix") for m in mix]
    return mix[0] if len(mix) == 1 else (mix[0], mix[1], mix[2])


def make_request(args: argparse.Namespace, plan: Plan) -> Request:
    """The generation request the flags describe (the edits come per grid cell)."""
    request = Request(enabled=True, scale=plan.scales[0], start=float(args.start),
                      face_index=-1 if args.face_index is None else int(args.face_index))
    if args.photo is not None:
        request.source, request.reference = Source.PHOTO, Path(args.photo)
    elif args.random_identity is not None:
        request.source, request.seed = Source.SEED, int(args.random_identity)
    else:
        request.source, request.identity = Source.SAVED, args.identity
    if args.mix_with:
        request.source2, request.reference2, request.identity2, request.seed2 = _second(args.mix_with)
        if isinstance(plan.mix, tuple):
            request.mix_mode = MixMode.PER_GROUP
            request.mix_coarse, request.mix_middle, request.mix_fine = plan.mix
        else:
            request.mix = plan.mix
    return request


def _second(spec: str) -> tuple[Source, Any, str, int]:
    """--mix-with: seed:N, a photo file, or a saved identity (name or file)."""
    if spec.startswith("seed:"):
        try:
            seed = int(spec[5:])
        except ValueError:
            raise WPlusError(f"--mix-with {spec!r}: seed:N takes an integer") from None
        return Source.SEED, None, "", check_flag("seed2", seed, "--mix-with seed")
    if Path(spec).suffix.lower() in PHOTO_SUFFIXES:
        read_photo(spec, "--mix-with")
        return Source.PHOTO, Path(spec), "", 0
    return Source.SAVED, None, spec, 0
