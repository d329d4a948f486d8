"""ComfyUI's IMAGE: a float tensor (B,H,W,3) in [0,1]; PIL images and StyleGAN's [-1,1] renders."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from wplus.errors import ImageInputError


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """IMAGE (B,H,W,C) -> RGB PIL images."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ImageInputError(f"W+: expected an IMAGE (B,H,W,3); got {getattr(images, 'shape', type(images))}")
    pixels = (images[..., :3].detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return [Image.fromarray(p, "RGB") for p in pixels]


def from_pil(images: list[Image.Image]) -> torch.Tensor:
    """RGB PIL images of one size -> IMAGE (B,H,W,3)."""
    arrays = [np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0 for img in images]
    return torch.from_numpy(np.stack(arrays))


def from_render(render: torch.Tensor, size: int) -> torch.Tensor:
    """StyleGAN's (B,3,S,S) in [-1,1] -> IMAGE (B,size,size,3)."""
    x = ((render.detach().float().cpu().clamp(-1, 1) + 1) / 2)
    if x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                            antialias=True)
    return x.clamp(0, 1).permute(0, 2, 3, 1).contiguous()
