"""Train the W+ adapter: `python trainer/train.py --stage 1 --pretrained-model MODEL --manifest DATA`.

Multi-GPU / multi-node: `accelerate launch [--num_processes 8] trainer/train.py ...`.
`python trainer/train.py --help` lists every option; defaults come from trainer/configs/stage{N}.yaml.
"""
from __future__ import annotations

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
    except (FileNotFoundError, ValueError, WPlusError) as exc:  # bad paths/files/settings: no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    trainer.train()
    return 0


if __name__ == "__main__":
    sys.exit(main())
