"""W+ (B,18,512) -> 4 identity tokens of the UNet's context width.

StyleGAN's W+ layers control coarse-to-fine attributes; the paper projects four layer groups
separately so each token carries one band of detail. Parameter names follow the official
checkpoint's `w_proj` dict (`proj_0..3.weight`, `norm.weight`, `norm.bias`).
"""
from __future__ import annotations

import torch
from torch import nn

from wplus.geometry import NUM_STYLES, NUM_TOKENS, STYLE_DIM, TOKEN_GROUPS


class WPlusProjection(nn.Module):
    """Four bias-free linears over the W+ layer groups (each flattened), stacked, then LayerNorm."""

    def __init__(self, context_dim: int, w_dim: int = STYLE_DIM) -> None:
        super().__init__()
        self.context_dim = context_dim
        self.w_dim = w_dim
        for i, (start, end) in enumerate(TOKEN_GROUPS):
            self.add_module(f"proj_{i}", nn.Linear((end - start) * w_dim, context_dim, bias=False))
        self.norm = nn.LayerNorm(context_dim)

    @property
    def num_tokens(self) -> int:
        return NUM_TOKENS

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if w.ndim == 2:
            w = w.unsqueeze(0)
        if w.shape[1:] != (NUM_STYLES, self.w_dim):
            raise ValueError(f"W+ codes must be (B,{NUM_STYLES},{self.w_dim}); got {tuple(w.shape)}")
        w = w.to(device=self.norm.weight.device, dtype=self.norm.weight.dtype)
        tokens = [
            getattr(self, f"proj_{i}")(w[:, start:end].flatten(1))
            for i, (start, end) in enumerate(TOKEN_GROUPS)
        ]
        return self.norm(torch.stack(tokens, dim=1))
