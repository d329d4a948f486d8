"""Prompt -> conditioning for the stand-in. A deterministic fake text encoder (a tensor per prompt,
77 token rows per 75 words, like CLIP chunking) and AND composition (several cond rows per image)."""
from __future__ import annotations

import math
import re
import zlib

import torch

AND_RE = re.compile(r"\bAND\b")
WEIGHT_RE = re.compile(r"^(.*?)(?::\s*([+-]?[\d.]+))?\s*$", re.S)


def encode(text: str, dim: int) -> torch.Tensor:
    """(77*chunks, dim): same text, same tensor; long prompts give more chunks (different lengths)."""
    chunks = max(1, math.ceil(len(text.split()) / 75))
    g = torch.Generator().manual_seed(zlib.crc32(text.encode()))
    return torch.randn(77 * chunks, dim, generator=g)


def split_and(prompt: str) -> list[tuple[str, float]]:
    parts = []
    for part in AND_RE.split(prompt):
        m = WEIGHT_RE.match(part.strip())
        parts.append((m.group(1).strip(), float(m.group(2)) if m.group(2) else 1.0))
    return parts


def stack_conds(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack rows of different token counts by repeating each shorter tensor's last row."""
    longest = max(t.shape[0] for t in tensors)
    padded = [torch.cat([t, t[-1:].repeat(longest - t.shape[0], 1)]) if t.shape[0] < longest else t for t in tensors]
    return torch.stack(padded)


def get_multicond(prompts: list[str], dim: int):
    """(conds_list, stacked): conds_list[i] = [(row, weight), ...] for image i; rows image by image."""
    conds_list, tensors = [], []
    for prompt in prompts:
        entry = []
        for text, weight in split_and(prompt):
            entry.append((len(tensors), weight))
            tensors.append(encode(text, dim))
        conds_list.append(entry)
    return conds_list, stack_conds(tensors)


def get_uncond(prompts: list[str], dim: int) -> torch.Tensor:
    return stack_conds([encode(p, dim) for p in prompts])
