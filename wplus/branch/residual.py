"""The residual identity attention: the paper's per-layer math, shared by the WebUI hook and the trainer.

    h  = text attention output of the layer, before its output projection
    r  = softmax((h Wq')(T Wk')^T / sqrt(d_head)) (T Wv')   # the layer's own head split, no mask
    to_out(h + scale * r)

Keys/values depend only on the identity tokens T, so hosts compute them once per generation
(`key_value`) and reuse them at every sampling step (`forward`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResidualIdentityAttention(nn.Module):
    """Attention from a layer's text-attention output to the 4 identity tokens."""

    def __init__(self, query_dim: int, context_dim: int, heads: int | None = None) -> None:
        super().__init__()
        # Files do not store the head split: it is the host layer's, given here or at `key_value`.
        self.heads = heads
        self.to_q_wplus = nn.Linear(query_dim, query_dim, bias=False)
        self.to_k_wplus = nn.Linear(context_dim, query_dim, bias=False)
        self.to_v_wplus = nn.Linear(context_dim, query_dim, bias=False)

    @torch.no_grad()
    def init_from(self, to_q: nn.Linear, to_k: nn.Linear, to_v: nn.Linear) -> None:
        """Start from the host layer's own projections, as the paper's training does."""
        for mine, theirs in ((self.to_q_wplus, to_q), (self.to_k_wplus, to_k), (self.to_v_wplus, to_v)):
            if mine.weight.shape != theirs.weight.shape:
                raise ValueError(f"cannot copy {tuple(theirs.weight.shape)} into {tuple(mine.weight.shape)}")
            mine.weight.copy_(theirs.weight)

    def key_value(self, tokens: torch.Tensor, heads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,4,D) tokens -> per-head keys and values (N,H,4,d), H the layer's head count."""
        heads = heads or self.heads
        if not heads or self.to_q_wplus.out_features % heads:
            raise ValueError(f"cannot split width {self.to_q_wplus.out_features} into {heads} heads")
        return _split(self.to_k_wplus(tokens), heads), _split(self.to_v_wplus(tokens), heads)

    def forward(self, h: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
        """h (N,L,C) -> h + scale * r; key/value from `key_value` for the same N rows."""
        q = _split(self.to_q_wplus(h), key.shape[1])
        r = F.scaled_dot_product_attention(q, key, value)
        n, heads, length, d = r.shape
        return h + scale * r.transpose(1, 2).reshape(n, length, heads * d)


def _split(x: torch.Tensor, heads: int) -> torch.Tensor:
    n, length, c = x.shape
    return x.reshape(n, length, heads, c // heads).transpose(1, 2)
