"""A small stand-in for `wplus.stylegan.e4e.E4E` built from the real modules, for identity/CLI tests.

The real e4e's 18 style blocks alone hold ~230M parameters whatever the body width (each maps to
512 channels), so tests use a narrow real `Encoder4Editing` (16-d codes) lifted to 512 by a fixed
random matrix, and a real `stylegan2.Generator` at 1024 px with 4 channels per layer. Same
interface as E4E: encode, render, latent_avg, device, dtype, release.
"""
from __future__ import annotations

import torch

from wplus.stylegan import encoder as e4e_encoder
from wplus.stylegan import generator as stylegan2


class TinyE4E:
    def __init__(self, seed: int = 0):
        torch.manual_seed(seed)
        cfg = e4e_encoder.EncoderConfig(style_count=18, style_dim=16, widths=(16, 16, 16, 16), units=(1, 1, 1, 1))
        self.encoder = e4e_encoder.Encoder4Editing(cfg).eval()
        gcfg = stylegan2.GeneratorConfig(size=1024, style_dim=512, n_mlp=1, channels=(4,) * 9)
        self.generator = stylegan2.Generator(gcfg).eval()
        self.lift = torch.randn(16, 512) / 4
        self.latent_avg = 0.1 * torch.randn(18, 512)
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.released = False
        self.encode_calls = 0

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        assert images.shape[1:] == (3, 256, 256) and images.min() >= -1.0 and images.max() <= 1.0
        self.encode_calls += 1
        with torch.no_grad():
            return self.encoder(images) @ self.lift + self.latent_avg

    def render(self, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.generator(w.reshape(-1, 18, 512))

    def release(self) -> None:
        self.released = True
