"""When the branch runs and with which tokens: one schedule for every host.

The paper's pipeline (`generate_idnoise` in csxmli2016/w-plus-adapter) delays the identity so the
text lays out the scene first: with `start` percent, the branch is off at every step index
i <= min(int(start/100 · steps), 30) and on after it. So start 0 still leaves step 0 to the text
alone, start 100 waits 30 steps at most, and one step (steps = 1) never runs the branch. A1111,
Forge, the diffusers pipeline, the ComfyUI nodes and the trainer's validation all ask `branch_on`.

The token bank holds, per generation, the projection of each identity's W+ code and then the
projection of an all-zero W+ (the unconditional rows' tokens); `wplus.branch.rows` maps each
host's CFG rows onto it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

#: The paper's pipeline never delays the identity by more than this many steps.
MAX_START_STEPS = 30


def start_step(start: float, steps: int) -> int:
    """The last step index with the branch off: int(start/100 · steps), at most MAX_START_STEPS."""
    return min(int(float(start) / 100 * steps), MAX_START_STEPS)


def branch_on(step: int, steps: int, start: float) -> bool:
    """Whether the branch runs at step index `step` of `steps`, `start` in percent (the paper's rule)."""
    return step > start_step(start, steps)


@dataclass(frozen=True)
class Schedule:
    """λ per step of one generation."""

    scale: float  # λ
    start: float  # percent of the steps before the identity is injected
    from_first_step: bool = False  # a pass that keeps the layout it was given (ADetailer's face pass)
    hires_full: bool = True  # the hires-fix pass keeps the branch on from its first step

    def scale_at(self, step: int, steps: int, hires: bool = False) -> float:
        """λ at step index `step` of `steps` (0 while the branch is off)."""
        on = self.from_first_step or (hires and self.hires_full) or branch_on(step, steps, self.start)
        return float(self.scale) if on else 0.0


@torch.no_grad()
def token_bank(adapter: torch.nn.Module, codes: torch.Tensor) -> torch.Tensor:
    """(N+1,4,D) tokens: N identities' W+ codes (N,18,512) projected apart, as the paper does (one
    batched call differs in the last bits), then the zero-W+ row for the unconditional rows."""
    weight = adapter.proj.norm.weight
    identities = adapter.project(codes.to(weight.device, weight.dtype))
    return torch.cat([identities, adapter.zero_tokens(1)])
