"""Forge's sampling function: conditions -> chunked UNet calls with `cond_or_uncond` (see ../README.md)."""
from __future__ import annotations

import math

import torch

COND, UNCOND = 0, 1


def compute_cond_mark(cond_or_uncond: list[int], sigmas: torch.Tensor) -> torch.Tensor:
    n = int(sigmas.shape[0])
    return torch.tensor([c for c in cond_or_uncond for _ in range(n)], dtype=sigmas.dtype)


def compute_cond_indices(cond_or_uncond: list[int], sigmas: torch.Tensor) -> tuple[list[int], list[int]]:
    n = int(sigmas.shape[0])
    cond, uncond = [], []
    for i, c in enumerate(cond_or_uncond):
        (cond if c == COND else uncond).extend(range(i * n, (i + 1) * n))
    return cond, uncond


def _can_concat(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Cross-attention contexts share a call when equal, or when one length repeats into the other's
    lcm at most 4 times."""
    if a.shape == b.shape:
        return True
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        return False
    return math.lcm(a.shape[1], b.shape[1]) // min(a.shape[1], b.shape[1]) <= 4


def _concat(contexts: list[torch.Tensor]) -> torch.Tensor:
    length = math.lcm(*(c.shape[1] for c in contexts))
    return torch.cat([c.repeat(1, length // c.shape[1], 1) for c in contexts])


def calc_cond_uncond_batch(patcher, cond: list[dict], uncond: list[dict] | None, x: torch.Tensor,
                           sigma: torch.Tensor, model_options: dict):
    out_cond, out_uncond = torch.zeros_like(x), torch.zeros_like(x)
    count_cond, count_uncond = torch.full_like(x, 1e-37), torch.full_like(x, 1e-37)
    to_run = [(c, COND) for c in cond] + [(u, UNCOND) for u in (uncond or [])]
    while to_run:
        first = to_run[0][0]["cross_attn"]
        candidates = [i for i, (c, _) in enumerate(to_run) if _can_concat(c["cross_attn"], first)]
        candidates.reverse()  # Forge takes them from the end: uncond first, sub-prompts reversed
        chosen = candidates[:1]
        for i in range(1, len(candidates) + 1):
            amount = candidates[:len(candidates) // i]
            if patcher.memory_fits(len(amount) * x.shape[0]):
                chosen = amount
                break
        picked = [to_run.pop(i) for i in chosen]
        cond_or_uncond = [kind for _, kind in picked]
        options = dict(model_options.get("transformer_options", {}))
        options["cond_or_uncond"] = cond_or_uncond[:]
        options["sigmas"] = sigma
        options["cond_mark"] = compute_cond_mark(cond_or_uncond, sigma)
        options["cond_indices"], options["uncond_indices"] = compute_cond_indices(cond_or_uncond, sigma)
        n = len(picked)
        output = patcher.model.apply_model(torch.cat([x] * n), torch.cat([sigma] * n),
                                           _concat([c["cross_attn"] for c, _ in picked]), options).chunk(n)
        for o, (c, kind) in zip(output, picked):
            if kind == COND:
                out_cond += o
                count_cond += 1
            else:
                out_uncond += o
                count_uncond += 1
    return out_cond / count_cond, out_uncond / count_uncond


def sampling_function(patcher, params, cond_scale: float, cond_composition: list) -> torch.Tensor:
    """One denoiser step: the AND sub-prompt k of every image forms one condition (B rows)."""
    tensor = params.text_cond
    n_sub = min(len(c) for c in cond_composition)
    cond = []
    for k in range(n_sub):
        rows = [cond_composition[i][k][0] for i in range(len(cond_composition))]
        cond.append(dict(cross_attn=tensor[rows], strength=cond_composition[0][k][1]))
    uncond = [dict(cross_attn=params.text_uncond)]
    strength = sum(c["strength"] for c in cond)
    use_uncond = None if math.isclose(cond_scale, 1.0) else uncond
    cond_pred, uncond_pred = calc_cond_uncond_batch(patcher, cond, use_uncond, params.x, params.sigma,
                                                    patcher.model_options)
    if not math.isclose(strength, 1.0):
        return uncond_pred + (cond_pred - uncond_pred) * cond_scale * strength
    return uncond_pred + (cond_pred - uncond_pred) * cond_scale
