"""The command line, `wplus …` or `python -m wplus …`: invert a photo into an identity, generate
images with the paper's pipeline, list the edit directions, download the models.

Exit codes: 0 done, 2 a problem with the input or a missing file (the message says what to do),
130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

from wplus.cli import directions, download, generate, invert
from wplus.cli.parser import prog_name
from wplus.errors import WPlusError

COMMANDS = (invert, generate, download, directions)  # each: add_parser(sub), run(args, e4e_loader)
EXAMPLES = """examples:
  {prog} generate --photo me.jpg --prompt "a woman wearing a spacesuit" -o out.png
  {prog} invert photo.jpg -o alice --preview alice.png
  {prog} invert group.jpg --face-index 1 --edit smile=2 --edit age=-1
  {prog} directions
  {prog} download --what directions
"""


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    prog = prog or prog_name()
    parser = argparse.ArgumentParser(
        prog=prog, description="W+ adapter tools: turn a photo into an editable identity, generate images of "
                               "that person, fetch models, list edits.",
        epilog=EXAMPLES.format(prog=prog), formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub, prog)
    return parser


def main(argv: Sequence[str] | None = None, e4e_loader: Callable[[], Any] | None = None) -> int:
    """`e4e_loader` replaces the checkpoint loader (tests, or a host that already holds e4e)."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args, e4e_loader)
    except WPlusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: `{args.command}` stopped", file=sys.stderr)
        return 130
