"""What a resumed run checks against its checkpoint's meta.json, and what it changes.

A checkpoint continues its own stage only (Stage II starts from the Stage I *adapter*, `--init`).
Other batch sizes, resolution, seed or optimiser settings are accepted with a warning: the run goes
on with the new values, but no longer as the interrupted run would have.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from trainer.config import TrainConfig
from trainer.export import OURS as ADAPTER_FILE

# Settings a resumed run may change (warned about); max_steps may change silently (extending a run).
SETTINGS = ("train_batch_size", "gradient_accumulation_steps", "resolution", "seed", "learning_rate",
            "lr_scheduler", "lr_warmup_steps", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon")
LR_SETTINGS = ("learning_rate", "lr_scheduler", "lr_warmup_steps", "max_steps")


def check_resume(path: Path, cfg: TrainConfig, processes: int, warn: Callable[[str], Any] = print
                 ) -> dict[str, tuple[Any, Any]]:
    """Refuse a checkpoint of the other stage; warn about settings that differ from its meta.json.

    Returns {setting: (the checkpoint's, now)} for what differs (max_steps and processes included)."""
    meta_path = Path(path) / "meta.json"
    if not meta_path.is_file():  # every checkpoint of this trainer has one; nothing to compare
        return {}
    meta = json.loads(meta_path.read_text())
    stage = meta.get("stage")
    if stage is not None and int(stage) != cfg.stage:
        fix = (f"start Stage II from its adapter with --init {Path(path) / ADAPTER_FILE} (and no --resume)"
               if cfg.stage == 2 else "resume it with --stage 2")
        raise ValueError(f"--resume {path}: that checkpoint is from Stage {stage} (its meta.json) and this run "
                         f"is Stage {cfg.stage}; a checkpoint only continues its own stage: {fix}")
    old = meta.get("config", {})
    changed = {k: (old[k], getattr(cfg, k)) for k in (*SETTINGS, "max_steps") if k in old and old[k] != getattr(cfg, k)}
    if meta.get("processes", processes) != processes:
        changed["processes"] = (meta["processes"], processes)
    shown = [f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items() if k != "max_steps"]
    if shown:
        warn(f"W+ trainer: warning: resuming {path} with other settings than it was trained with: "
             f"{', '.join(shown)}. Training continues with the new values, but not as the interrupted run "
             "would have (other samples per step, or another update).")
    return changed


def apply_settings(optimizer: Any, scheduler: Any, cfg: TrainConfig, changed: dict) -> None:
    """After loading their states: the optimizer's and the schedule's settings from `cfg`, not the checkpoint."""
    for group in optimizer.param_groups:
        group.update(weight_decay=cfg.weight_decay, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon)
    if set(changed) & set(LR_SETTINGS) and hasattr(scheduler, "lr_lambdas"):
        # diffusers' schedules are LambdaLR: lr = base lr * f(step), f from the current settings
        scheduler.base_lrs = [cfg.learning_rate] * len(optimizer.param_groups)
        for group, fn in zip(optimizer.param_groups, scheduler.lr_lambdas):
            group["initial_lr"] = cfg.learning_rate
            group["lr"] = cfg.learning_rate * fn(scheduler.last_epoch)
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
