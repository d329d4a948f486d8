"""The one pixel transform between images and StyleGAN / e4e / VAE tensors: uint8 RGB <-> [-1, 1].

`to_input` is e4e's inference transform (bilinear resize, x / 127.5 - 1); `to_pil` its inverse
(clamped, rounded). The trainer's data and validation images and every preview use the same two.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image


def to_input(image: Any, size: int | None = 256) -> torch.Tensor:
    """An RGB image -> (1, 3, size, size) float32 in [-1, 1] (`size=None` keeps its size).

    image: a PIL image, an HxWx3 array (uint8 values), or a tensor (3,H,W) / (B,3,H,W) holding
    uint8-like values (0..255), [0, 1] or already [-1, 1]."""
    if isinstance(image, torch.Tensor):
        return _tensor_to_input(image, size)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image.astype(np.uint8))
    image = image.convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1)
    return (x / 127.5 - 1.0)[None]


def _tensor_to_input(image: torch.Tensor, size: int | None) -> torch.Tensor:
    t = image.detach().float()
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.max() > 1.5:  # uint8-like values
        t = t / 127.5 - 1.0
    elif t.min() >= 0:
        t = t * 2.0 - 1.0
    if size is not None and t.shape[-1] != size:
        t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return t


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) or (3, H, W) in [-1, 1] -> list of RGB PIL images (clamped, rounded)."""
    x = images.detach().float()
    if x.dim() == 3:
        x = x[None]
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    return [Image.fromarray(a.permute(1, 2, 0).numpy(), "RGB") for a in x]
