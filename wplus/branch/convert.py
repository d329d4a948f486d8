"""Convert adapter files: `python -m wplus.convert IN OUT [--half] [--arch ARCH]`.

IN may be the official `wplus_adapter.bin` or our `.safetensors`; OUT's format follows its suffix
(`.safetensors` = ours with metadata, anything else = the official pickle layout).
"""
from __future__ import annotations

import argparse
import sys

import torch

from wplus.branch.files import load_adapter, save_adapter
from wplus.errors import WPlusError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wplus.convert", description=(
        "Convert a W+ adapter file between the official wplus_adapter.bin layout and our .safetensors; "
        "OUT's suffix picks the format (.safetensors = ours with metadata, anything else = the official "
        "pickle layout)."))
    parser.add_argument("src", metavar="IN", help="adapter file to read (.bin official or .safetensors)")
    parser.add_argument("dst", metavar="OUT",
                        help="file to write; .safetensors = our format, else the official .bin layout")
    parser.add_argument("--half", action="store_true", help="store fp16 weights (half the size)")
    parser.add_argument("--arch", choices=["sd1", "sd2", "sdxl", "custom"], help="override the recorded model family")
    args = parser.parse_args(argv)
    try:
        adapter = load_adapter(args.src)
        if args.arch:
            adapter.arch = args.arch
        official = not args.dst.endswith(".safetensors")
        out = save_adapter(adapter, args.dst, official=official, dtype=torch.float16 if args.half else None)
    except WPlusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({'official .bin' if official else 'safetensors'}) — {adapter.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
