"""Load e4e (photo -> W+) and its StyleGAN2 generator (W+ -> preview, seed -> new identity).

Accepted sources: the official `e4e_ffhq_encode.pt` ({"state_dict": {"encoder.*", "decoder.*"},
"latent_avg", "opts"}, read with `weights_only=True`), the same dict already in memory, or our
safetensors conversion of it (flat "encoder.*", "decoder.*", "latent_avg"; `save_e4e_safetensors`
or `python -m wplus.e4e convert IN OUT`).

Memory: `load_e4e` only reads key names, shapes and `latent_avg` (the architecture is read from the
shapes and checked at once). The encoder (~0.9 GB) and the generator (~0.12 GB) are built on first
use of `.encoder` / `.generator` (or `.load()`) and dropped by `.release()` (or on leaving a `with`
block); from a file they are read again when next needed. A source dict passed in stays owned by
the caller: the modules share its tensors (no copy on CPU). Reading and checking files:
`wplus.stylegan.e4e_files`.
"""
from __future__ import annotations

import argparse
import gc
import sys
from typing import Any, Dict, Optional, Sequence, Union

import torch
from torch import nn

from wplus.errors import WPlusError
from wplus.stylegan import encoder as e4e_encoder
from wplus.stylegan import generator as stylegan2
from wplus.stylegan.e4e_files import (
    FORMAT,
    FORMAT_VERSION,
    Source,
    Weights,
    configs,
    latent_avg,
    meta_module,
    open_weights,
    save_e4e_safetensors,
)
from wplus.stylegan.pixels import to_input, to_pil  # noqa: F401 (public here: e4e's input transform)

__all__ = ["E4E", "FORMAT", "FORMAT_VERSION", "load_e4e", "save_e4e_safetensors", "to_input", "to_pil", "main"]


# --------------------------------------------------------------------------- the model

class E4E:
    """e4e encoder + StyleGAN2 generator + latent_avg, loaded lazily, released on demand."""

    def __init__(self, weights: Weights, device: Union[str, torch.device, None] = None,
                 dtype: torch.dtype = torch.float32):
        self._weights = weights
        self.encoder_config, self.generator_config = configs(weights)
        self.n_latent, self.style_dim = self.generator_config.n_latent, self.generator_config.style_dim
        self.size = self.generator_config.size
        self.opts = dict(weights.opts)
        self.device = torch.device(device or "cpu")
        self.dtype = dtype
        self.latent_avg = latent_avg(weights, self.n_latent, self.style_dim).to(self.device)
        self._modules: Dict[str, Optional[nn.Module]] = {"encoder": None, "decoder": None}

    def __repr__(self) -> str:
        loaded = [k for k, m in self._modules.items() if m is not None] or ["nothing"]
        return (f"E4E({self._weights.origin}, W+ {self.n_latent}x{self.style_dim}, {self.size}px, "
                f"{self.device}, {self.dtype}, loaded: {', '.join(loaded)})")

    # ---- modules on demand
    def _module(self, part: str) -> nn.Module:
        module = self._modules[part]
        if module is None:
            cls, cfg = ((e4e_encoder.Encoder4Editing, self.encoder_config) if part == "encoder"
                        else (stylegan2.Generator, self.generator_config))
            module = meta_module(cls, cfg)
            module.load_state_dict(self._weights.fetch(part), strict=True, assign=True)
            module = module.to(self.device, self.dtype).eval().requires_grad_(False)
            self._modules[part] = module
        return module

    @property
    def encoder(self) -> e4e_encoder.Encoder4Editing:
        return self._module("encoder")

    @property
    def generator(self) -> stylegan2.Generator:
        return self._module("decoder")

    def load(self) -> "E4E":
        """Build both modules now (instead of on first use)."""
        self._module("encoder")
        self._module("decoder")
        return self

    def release(self, part: str = "all") -> None:
        """Drop the encoder ("encoder"), the generator ("generator") or both and free their memory."""
        for key in (("encoder", "decoder") if part == "all" else
                    ("decoder",) if part in ("generator", "decoder") else (part,)):
            self._modules[key] = None
        gc.collect()
        if self.device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __enter__(self) -> "E4E":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def to(self, device: Union[str, torch.device, None] = None, dtype: Optional[torch.dtype] = None) -> "E4E":
        self.device = torch.device(device) if device is not None else self.device
        self.dtype = dtype or self.dtype
        self.latent_avg = self.latent_avg.to(self.device)
        for key, m in self._modules.items():
            if m is not None:
                self._modules[key] = m.to(self.device, self.dtype)
        return self

    # ---- encode / render / map
    def encode(self, images: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
        """(B, 3, 256, 256) in [-1, 1] -> W+ (B, n_latent, style_dim) float32, latent_avg included."""
        images = _check_images(images)
        outs = []
        with torch.set_grad_enabled(images.requires_grad and torch.is_grad_enabled()):
            for chunk in images.split(batch_size):
                codes = self.encoder(chunk.to(self.device, self.dtype))
                outs.append(codes.float() + self.latent_avg)
        return torch.cat(outs)

    def render(self, w: torch.Tensor, randomize_noise: bool = False, batch_size: int = 2) -> torch.Tensor:
        """W+ (B, n_latent, style_dim) (or (n_latent, style_dim)) -> (B, 3, size, size) float32, about
        [-1, 1] (not clamped), with the checkpoint's fixed noise buffers unless randomize_noise."""
        w = self._check_w(w)
        outs = []
        with torch.set_grad_enabled(w.requires_grad and torch.is_grad_enabled()):
            for chunk in w.split(batch_size):
                outs.append(self.generator(chunk.to(self.device, self.dtype), randomize_noise).float())
        return torch.cat(outs)

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, style_dim) -> w (B, style_dim) float32 through the mapping network."""
        with torch.set_grad_enabled(z.requires_grad and torch.is_grad_enabled()):
            return self.generator.mapping(z.to(self.device, self.dtype)).float()

    def map_seed(self, seed: Union[int, Sequence[int]], truncation: float = 0.7) -> torch.Tensor:
        """Seed(s) -> a new fictional identity's W+ (B, n_latent, style_dim): z ~ N(0, I) from a CPU
        generator (the same on every device), w broadcast to every layer and pulled towards the
        average face by `truncation` (1 = none; 0.5-0.8 gives typical, clean faces)."""
        seeds = [seed] if isinstance(seed, int) else list(seed)
        z = torch.stack([torch.randn(self.style_dim, generator=torch.Generator().manual_seed(int(s)))
                         for s in seeds])
        w = self.mapping(z)[:, None, :].expand(-1, self.n_latent, -1)
        return self.latent_avg + truncation * (w - self.latent_avg)

    def _check_w(self, w: torch.Tensor) -> torch.Tensor:
        if not isinstance(w, torch.Tensor):
            raise TypeError(f"W+ must be a tensor, got {type(w).__name__}")
        if w.ndim == 2:
            w = w[None]
        if w.ndim != 3 or tuple(w.shape[1:]) != (self.n_latent, self.style_dim):
            raise ValueError(f"W+ must have shape (B, {self.n_latent}, {self.style_dim}), got {tuple(w.shape)}")
        return w


def _check_images(images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a tensor (use wplus.stylegan.e4e.to_input for PIL/numpy), "
                        f"got {type(images).__name__}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, 256, 256):
        raise ValueError(f"e4e encodes (B, 3, 256, 256) images, got {tuple(images.shape)}; "
                         "align the face at size 256 (wplus.align_face(..., size=256))")
    if images.numel() and (images.min() < -1.5 or images.max() > 1.5):
        raise ValueError("e4e expects pixel values in [-1, 1] (x / 127.5 - 1), got "
                         f"[{images.min().item():.3g}, {images.max().item():.3g}]")
    return images


# --------------------------------------------------------------------------- public API

def load_e4e(source: Source, device: Union[str, torch.device, None] = None,
             dtype: torch.dtype = torch.float32) -> E4E:
    """Open an e4e checkpoint (official .pt, its dict, or our .safetensors); modules load on demand.

    Raises MissingWeightsError for a missing file and E4EFormatError for a corrupt file or one
    holding another model (the message says which keys/shapes are wrong)."""
    return E4E(open_weights(source), device=device, dtype=dtype)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m wplus.e4e", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="official e4e .pt -> our safetensors")
    c.add_argument("src")
    c.add_argument("out")
    i = sub.add_parser("info", help="check a checkpoint and print its architecture")
    i.add_argument("src")
    args = p.parse_args(argv)
    try:
        if args.cmd == "convert":
            print(f"wrote {save_e4e_safetensors(args.src, args.out)}")
        else:
            e = load_e4e(args.src)
            print(e)
            print(e.encoder_config)
            print(e.generator_config)
    except WPlusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
