"""The W+ adapter: the projection plus one residual identity attention per cross-attention layer."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from wplus.branch.layers import LayerSpec, cross_attention_layers, describe, layer_spec, unet_family
from wplus.branch.projection import WPlusProjection
from wplus.branch.residual import ResidualIdentityAttention
from wplus.geometry import NUM_STYLES


class WPlusAdapter(nn.Module):
    """Holds all trainable W+ weights; `wplus.attach` plugs it into a UNet."""

    def __init__(self, specs: Sequence[LayerSpec], context_dim: int, arch: str | None = None) -> None:
        super().__init__()
        self.specs = list(specs)
        self.context_dim = context_dim
        self.arch = arch or unet_family(self.specs)
        self.proj = WPlusProjection(context_dim)
        self.layers = nn.ModuleList(ResidualIdentityAttention(s.query_dim, s.context_dim, s.heads) for s in self.specs)

    @classmethod
    def from_unet(cls, unet: nn.Module) -> "WPlusAdapter":
        """A fresh adapter for this UNet, residual weights copied from each layer's to_q/to_k/to_v."""
        attns = cross_attention_layers(unet)
        specs = [layer_spec(a) for a in attns]
        adapter = cls(specs, specs[0].context_dim)
        for residual, attn in zip(adapter.layers, attns):
            residual.init_from(attn.to_q, attn.to_k, attn.to_v)
        ref = attns[0].to_q.weight
        return adapter.to(device=ref.device, dtype=ref.dtype)

    def project(self, w: torch.Tensor) -> torch.Tensor:
        """(B,18,512) W+ codes -> (B,4,D) identity tokens."""
        return self.proj(w)

    def zero_tokens(self, n: int = 1) -> torch.Tensor:
        """Tokens of the all-zero W+: what unconditional rows see."""
        ref = self.proj.norm.weight
        return self.project(torch.zeros(n, NUM_STYLES, self.proj.w_dim, device=ref.device, dtype=ref.dtype))

    def describe(self) -> str:
        return describe(self.arch, self.specs)

    def official_state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """The official release layout: ModuleList of diffusers processors, attn2 at odd indices."""
        residual = {
            f"{2 * i + 1}.{name}": tensor
            for i, layer in enumerate(self.layers)
            for name, tensor in layer.state_dict().items()
        }
        return {"w_proj": self.proj.state_dict(), "wplus_adapter": residual}
