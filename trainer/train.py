"""Train the W+ adapter: `python trainer/train.py --stage 1 --pretrained-model MODEL --manifest DATA`.

Multi-GPU / multi-node: `accelerate launch [--num_processes 8] trainer/train.py ...`.
`python trainer/train.py --help` lists every option; defaults come from trainer/configs/stage{N}.yaml.

Exit status: 0 finished (the adapter is exported), 1 the loss diverged, 2 bad settings or input
files (one line says which), 143 stopped by SIGTERM and 130 by Ctrl-C (both after writing a
checkpoint to resume from).
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: `wplus` and `trainer`

from trainer.config import parse_config  # noqa: E402
from wplus.errors import WPlusError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    try:
        cfg.validate()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from trainer.engine import Trainer  # torch, diffusers, accelerate: only once the options are valid
    trainer = Trainer(cfg)
    try:
        trainer.setup()
    except (OSError, ValueError, WPlusError) as exc:  # bad paths/files/settings: no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        trainer.train()
    except FloatingPointError as exc:  # diverged: no checkpoint or export of those weights was written
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        where = trainer.last_checkpoint or "no checkpoint (nothing to save yet)"
        print(f"W+ trainer: interrupted (Ctrl-C) at step {trainer.step}; checkpoint saved: {where}. Continue "
              f"with --resume latest --output-dir {trainer.out}.", file=sys.stderr)
        return 128 + signal.SIGINT
    return 128 + signal.SIGTERM if trainer.stopped == "SIGTERM" else 0


if __name__ == "__main__":
    sys.exit(main())
