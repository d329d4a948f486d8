"""Export the trained adapter: our .safetensors (the WebUI panel's format) and, on request, the
official `wplus_adapter.bin` layout. Both written by `wplus.save_adapter`, read by `wplus.load_adapter`.

Also usable on its own: `python trainer/export.py CHECKPOINT_DIR_OR_FILE OUT [--official] [--half]`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

import wplus

OURS = "wplus_adapter.safetensors"
OFFICIAL = "wplus_adapter.bin"


def export_adapter(adapter: "wplus.WPlusAdapter", out_dir: str | Path, official: bool = False,
                   dtype: torch.dtype | None = None) -> Path:
    """Write OUT/wplus_adapter.safetensors (+ OUT/wplus_adapter.bin when official); returns the first."""
    out_dir = Path(out_dir)
    path = wplus.save_adapter(adapter, out_dir / OURS, dtype=dtype)
    if official:
        wplus.save_adapter(adapter, out_dir / OFFICIAL, official=True, dtype=dtype)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python trainer/export.py",
                                     description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("source", help="a checkpoint folder (outputs/.../checkpoints/step-N) or an adapter file")
    parser.add_argument("out_dir", help="folder to write wplus_adapter.safetensors (and .bin) into")
    parser.add_argument("--official", action="store_true", help="also write the official wplus_adapter.bin")
    parser.add_argument("--half", action="store_true", help="store fp16 weights")
    args = parser.parse_args(argv)
    src = Path(args.source)
    if src.is_dir():
        src = src / OURS
    try:
        adapter = wplus.load_adapter(src)
    except wplus.WPlusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = export_adapter(adapter, args.out_dir, args.official, torch.float16 if args.half else None)
    print(f"wrote {path}" + (f" and {Path(args.out_dir) / OFFICIAL}" if args.official else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
