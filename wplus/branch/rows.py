"""Which identity-token set each row of the host's CFG batch uses, and when the branch is on.

The WebUI's CFG batch is [cond rows (one per image, more with AND prompts)] + [uncond rows]
(+ a second uncond block for instruct-pix2pix). Cond rows use the identity (bank row 0), every
other row the projection of an all-zero W+ (bank row 1), as in the paper's pipeline. When the host
drops the uncond rows (NGMS, skip early CFG) or splits the batch into several UNet calls, the
calls consume this layout front to back, so one index per step covers every case.
"""
from __future__ import annotations

import torch

BANK_IDENTITY = 0
BANK_ZERO = 1


def cfg_row_index(n_rows: int, n_cond: int) -> torch.Tensor:
    """(n_rows,) bank rows: the first `n_cond` rows the identity, the rest zero-W+."""
    if not 0 <= n_cond <= n_rows:
        raise ValueError(f"a CFG batch of {n_rows} rows cannot hold {n_cond} conditional rows")
    index = torch.full((n_rows,), BANK_ZERO, dtype=torch.long)
    index[:n_cond] = BANK_IDENTITY
    return index


def batch_rows(tensor_or_dict) -> int:
    """Rows of a conditioning: a tensor, or SDXL's dict of tensors (its 'crossattn' entry)."""
    if isinstance(tensor_or_dict, dict):
        return int(tensor_or_dict["crossattn"].shape[0])
    return int(tensor_or_dict.shape[0])


#: The paper's pipeline never delays the identity by more than this many steps
#: (`generate_idnoise`: start_embed_step = min(int(start% * steps), 30)).
MAX_START_STEPS = 30


def start_step(total_steps: int, start: float) -> float:
    """The last step index without the identity: start * steps, at most MAX_START_STEPS."""
    return min(start * total_steps, MAX_START_STEPS)


def branch_on(step: int, total_steps: int, start: float) -> bool:
    """Delayed subject conditioning (the paper's pipeline): off while step index <= start * steps,
    capped at MAX_START_STEPS steps (so a 100-step run with start 0.5 turns it on after step 30).

    `start` is a fraction in [0, 1]; 0 means on from the first step.
    """
    if start <= 0 or total_steps <= 0:
        return True
    return step > start_step(total_steps, start)
