"""When a `WPlusApply` branch runs in ComfyUI: the core's one start rule, on ComfyUI's sigmas.

ComfyUI hands every attention patch the current sigma (`sigmas`) and, from its samplers, the
whole schedule (`sample_sigmas`, steps + 1 values): the step index is the current sigma's place
in it. `start_at` then follows the paper's rule with start = 100 · start_at percent (off at every
step i <= min(int(start/100 · steps), 30), so also at step 0 with start_at 0); where no schedule is
given (custom samplers), the branch starts at `percent_to_sigma(start_at)` as ComfyUI's own nodes.
`end_at` turns it off below `percent_to_sigma(end_at)` (ComfyUI's convention; 1 = never).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from wplus.generation.schedule import branch_on


def step_index(sigma: float, schedule: torch.Tensor) -> int:
    """Index of the sampler step that `sigma` belongs to: the last schedule value >= sigma (a
    second model call inside a step, as Heun's, counts for that step)."""
    values = schedule.detach().float().cpu().reshape(-1)[:-1]
    at_or_above = int((values >= sigma * (1 - 1e-5)).sum())
    return min(max(at_or_above - 1, 0), max(len(values) - 1, 0))


@dataclass
class Window:
    """start_at / end_at of one WPlusApply, with the sigmas its model's sampling gives them."""

    start_at: float
    sigma_start: float  # percent_to_sigma(start_at): used when the sampler gives no schedule
    sigma_end: float  # percent_to_sigma(end_at)
    _last: tuple = field(default=(None, None, False), repr=False)

    def active(self, extra_options: dict[str, Any]) -> bool:
        """Whether the branch runs in this model call (worked out once per call, not per layer)."""
        sigmas, schedule = extra_options.get("sigmas"), extra_options.get("sample_sigmas")
        if sigmas is None:
            return True
        last_sigmas, last_schedule, on = self._last
        if last_sigmas is sigmas and last_schedule is schedule:
            return on
        on = self._decide(float(sigmas.reshape(-1)[0]), schedule)
        self._last = (sigmas, schedule, on)
        return on

    def _decide(self, sigma: float, schedule: torch.Tensor | None) -> bool:
        if sigma < self.sigma_end:
            return False
        if isinstance(schedule, torch.Tensor) and schedule.numel() >= 2:
            return branch_on(step_index(sigma, schedule), schedule.numel() - 1, 100.0 * self.start_at)
        return sigma <= self.sigma_start
