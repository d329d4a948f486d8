"""Which identity-token set each row of the host's CFG batch uses, and when the branch is on.

Cond rows use the identity (bank row 0), every other row the projection of an all-zero W+ (bank
row 1), as in the paper's pipeline. One mapper, `chunk_rows`, turns a batch described as chunks
of cond/uncond rows into bank rows; each host's layout only says what its chunks are:

* AUTOMATIC1111 (`cfg_row_index`, once per sampler step): [cond rows (one per image, more with
  AND prompts)] + [uncond rows] (+ a second uncond block for instruct-pix2pix). When the host
  drops the uncond rows (NGMS, skip early CFG) or splits the batch into several UNet calls, the
  calls consume this layout front to back, so one index per step covers every case.
* Forge and ComfyUI (`forge_call_rows`, at every UNet call): the call itself says which chunk is
  which in `transformer_options["cond_or_uncond"]` (0 cond, 1 uncond; equal chunks, in batch
  order), in whatever order and grouping the host's memory planning chose.
* diffusers (`uncond_first_row_index`): [negative rows] + [positive rows] in one call per step.

When the branch runs is the schedule's business (`wplus.generation.schedule`), the same for all.
"""
from __future__ import annotations

from typing import Iterable

import torch

from wplus.errors import WPlusError

BANK_IDENTITY = 0
BANK_ZERO = 1
COND_MARK = 0  # Forge's cond_or_uncond entry of a conditional chunk (1: unconditional)


def chunk_rows(chunks: Iterable[tuple[bool, int]]) -> tuple[int, ...]:
    """Bank rows of a batch made of (is_cond, n_rows) chunks, in batch order."""
    out: list[int] = []
    for is_cond, n in chunks:
        out += [BANK_IDENTITY if is_cond else BANK_ZERO] * n
    return tuple(out)


def cfg_row_index(n_rows: int, n_cond: int) -> torch.Tensor:
    """AUTOMATIC1111's layout, (n_rows,) bank rows: the first `n_cond` rows the identity, the rest zero-W+."""
    if not 0 <= n_cond <= n_rows:
        raise ValueError(f"a CFG batch of {n_rows} rows cannot hold {n_cond} conditional rows")
    return torch.tensor(chunk_rows([(True, n_cond), (False, n_rows - n_cond)]), dtype=torch.long)


def forge_call_rows(n_rows: int, call_kwargs: dict) -> tuple[int, ...]:
    """Forge's layout: bank rows of one UNet call from its `transformer_options["cond_or_uncond"]`."""
    options = call_kwargs.get("transformer_options")
    marks = options.get("cond_or_uncond") if isinstance(options, dict) else None
    if not marks:
        raise WPlusError("W+: Forge called the UNet without transformer_options['cond_or_uncond'], so the "
                         "conditional rows cannot be told from the unconditional ones; the branch stops here.")
    if n_rows % len(marks):
        raise WPlusError(f"W+: Forge called the UNet with {n_rows} rows in {len(marks)} cond/uncond chunks; "
                         "the chunks must be equal")
    size = n_rows // len(marks)
    return chunk_rows((mark == COND_MARK, size) for mark in marks)


def batch_rows(tensor_or_dict) -> int:
    """Rows of a conditioning: a tensor, or SDXL's dict of tensors (its 'crossattn' entry)."""
    if isinstance(tensor_or_dict, dict):
        return int(tensor_or_dict["crossattn"].shape[0])
    return int(tensor_or_dict.shape[0])


# --- diffusers pipelines ---------------------------------------------------------------------------
def uncond_first_row_index(n_rows: int, cfg: bool, n_identities: int = 1) -> list[int]:
    """Bank rows for diffusers' batch: [negative rows] + [positive rows] (one UNet call per step).

    The bank holds `n_identities` identity rows (one for every image, or one per image) and then the
    zero-W+ row (bank row `n_identities`). Without CFG (guidance <= 1) every row is positive.
    """
    n_pos = n_rows // 2 if cfg else n_rows
    if n_rows <= 0 or (cfg and n_rows % 2):
        raise ValueError(f"a diffusers CFG batch has an even number of rows; got {n_rows}")
    if n_identities not in (1, n_pos):
        raise ValueError(f"{n_identities} W+ codes for {n_pos} images: give one code, or one per image")
    positive = [0] * n_pos if n_identities == 1 else list(range(n_pos))
    return ([n_identities] * (n_rows - n_pos)) + positive
