"""Load e4e (photo -> W+) and its StyleGAN2 generator (W+ -> preview, seed -> new identity).

Accepted sources: the official `e4e_ffhq_encode.pt` ({"state_dict": {"encoder.*", "decoder.*"},
"latent_avg", "opts"}, read with `weights_only=True`), the same dict already in memory, or our
safetensors conversion of it (flat "encoder.*", "decoder.*", "latent_avg"; `save_e4e_safetensors`
or `python -m wplus.e4e convert IN OUT`).

Memory: `load_e4e` only reads key names, shapes and `latent_avg` (the architecture is read from the
shapes and checked at once). The encoder (~0.9 GB) and the generator (~0.12 GB) are built on first
use of `.encoder` / `.generator` (or `.load()`) and dropped by `.release()` (or on leaving a `with`
block); from a file they are read again when next needed. A source dict passed in stays owned by
the caller: the modules share its tensors (no copy on CPU).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import struct
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

import torch
from torch import nn

from wplus.assets import registry
from wplus.assets.atomic import atomic_path
from wplus.assets.io import load_pickle
from wplus.assets.registry import missing_message
from wplus.errors import E4EFormatError, MissingWeightsError
from wplus.stylegan import encoder as e4e_encoder
from wplus.stylegan import generator as stylegan2
from wplus.stylegan.pixels import to_input, to_pil  # noqa: F401 (public here: e4e's input transform)

FORMAT = "wplus-e4e"
FORMAT_VERSION = "1"
PARTS = ("encoder", "decoder")

Source = Union[str, os.PathLike, Dict[str, Any]]


# --------------------------------------------------------------------------- reading sources

class _Weights:
    """Shapes of every tensor plus a way to fetch one part ("encoder"/"decoder") on demand."""

    def __init__(self, origin: str, shapes: Dict[str, torch.Size], dtypes: Dict[str, torch.dtype],
                 fetch: Callable[[str], Dict[str, torch.Tensor]], latent_avg: Any, opts: dict):
        self.origin, self.shapes, self.dtypes = origin, shapes, dtypes
        self.fetch, self.latent_avg, self.opts = fetch, latent_avg, opts

    def meta_part(self, part: str) -> Dict[str, torch.Tensor]:
        n = len(part) + 1
        return {k[n:]: torch.empty(s, dtype=self.dtypes[k], device="meta")
                for k, s in self.shapes.items() if k.startswith(part + ".")}


def _split(flat: Dict[str, Any], part: str) -> Dict[str, torch.Tensor]:
    n = len(part) + 1
    return {k[n:]: v for k, v in flat.items() if k.startswith(part + ".")}


def _from_dict(ckpt: Dict[str, Any], origin: str) -> _Weights:
    if not isinstance(ckpt, dict):
        raise E4EFormatError(f"{origin}: expected a checkpoint dict, got {type(ckpt).__name__}")
    flat = ckpt.get("state_dict", ckpt)
    if not isinstance(flat, dict):
        raise E4EFormatError(f"{origin}: 'state_dict' is a {type(flat).__name__}, not a dict of tensors")
    tensors = {k: v for k, v in flat.items() if isinstance(k, str) and k.split(".")[0] in PARTS
               and isinstance(v, torch.Tensor)}
    _require_parts(tensors, list(flat) if flat is ckpt else ["state_dict"] + list(flat), origin)
    return _Weights(origin, {k: v.shape for k, v in tensors.items()},
                    {k: v.dtype for k, v in tensors.items()},
                    lambda part: _split(tensors, part), ckpt.get("latent_avg"),
                    ckpt.get("opts") if isinstance(ckpt.get("opts"), dict) else {})


def _require_parts(keys: Iterable[str], all_keys: Sequence[Any], origin: str) -> None:
    present = {k.split(".")[0] for k in keys}
    missing = [p for p in PARTS if p not in present]
    if missing:
        sample = ", ".join(repr(k) for k in list(all_keys)[:5]) or "nothing"
        raise E4EFormatError(
            f"{origin}: not an e4e checkpoint: no '{missing[0]}.*' weights (it holds {sample}). "
            "Use the official e4e_ffhq_encode.pt or its safetensors conversion.")


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return path.suffix == ".safetensors"
    (n,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and n < path.stat().st_size


def _from_safetensors(path: Path) -> _Weights:
    from safetensors import safe_open

    origin = str(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = list(f.keys())
            info = {k: f.get_slice(k) for k in keys}
            shapes = {k: torch.Size(s.get_shape()) for k, s in info.items()}
            dtypes = {k: _st_dtype(s.get_dtype()) for k, s in info.items()}
            latent_avg = f.get_tensor("latent_avg") if "latent_avg" in keys else None
    except Exception as e:  # safetensors raises its own SafetensorError / OSError subclasses
        raise E4EFormatError(f"{origin}: cannot read this safetensors file ({e}); it is corrupt or "
                             "truncated: convert e4e_ffhq_encode.pt again") from e
    _require_parts(keys, keys, origin)
    try:
        opts = json.loads(meta.get("opts", "{}"))
    except ValueError:
        opts = {}

    def fetch(part: str) -> Dict[str, torch.Tensor]:
        n = len(part) + 1
        with safe_open(str(path), framework="pt") as f:
            return {k[n:]: _aligned(f.get_tensor(k)) for k in f.keys() if k.startswith(part + ".")}

    return _Weights(origin, {k: s for k, s in shapes.items() if k.split(".")[0] in PARTS},
                    dtypes, fetch, latent_avg, opts)


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """Tensors are assigned, not copied, into the model: a safetensors payload sits at any byte offset,
    and oneDNN takes another (not bit-identical) kernel path for unaligned weights, so give each one
    the allocator's 64-byte alignment — the same file then gives the same codes as the .pt."""
    return t if t.data_ptr() % 64 == 0 else t.clone()


def _st_dtype(name: str) -> torch.dtype:
    return {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
            "I64": torch.int64, "I32": torch.int32}.get(name, torch.float32)


def _torch_load(path: Path) -> Any:
    try:
        try:
            return load_pickle(path, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            return load_pickle(path)
    except Exception as e:
        kind = type(e).__name__
        hint = ("it pickles code objects, not only weights; refusing to run them"
                if "Weights only load failed" in str(e) else
                "it is corrupt, truncated or not a torch checkpoint")
        raise E4EFormatError(f"{path}: cannot load this e4e checkpoint ({hint}: {kind}: "
                             f"{str(e).splitlines()[0][:200] if str(e) else ''})") from e


def _from_torch_file(path: Path) -> _Weights:
    ckpt = _torch_load(path)
    w = _from_dict(ckpt, str(path))
    del ckpt

    def fetch(part: str) -> Dict[str, torch.Tensor]:  # re-read: nothing stays loaded after release()
        return _split(_from_dict_state(_torch_load(path)), part)

    w.fetch = fetch
    return w


def _from_dict_state(ckpt: Dict[str, Any]) -> Dict[str, Any]:
    return ckpt.get("state_dict", ckpt)


def _open(source: Source) -> _Weights:
    if isinstance(source, dict):
        return _from_dict(source, "e4e checkpoint dict")
    path = Path(source)
    if not path.is_file():
        raise MissingWeightsError(_missing_message(path))
    return _from_safetensors(path) if _is_safetensors(path) else _from_torch_file(path)


def _missing_message(path: Path) -> str:
    return missing_message(registry.get("e4e"), None, "no file at that path", path=path)


# --------------------------------------------------------------------------- architecture

def _configs(w: _Weights):
    try:
        enc = e4e_encoder.config_from_state_dict(w.meta_part("encoder"))
        gen = stylegan2.config_from_state_dict(w.meta_part("decoder"))
        if gen.size < 8 or gen.size & (gen.size - 1) or len(enc.widths) != 4:
            raise ValueError("an unsupported layout")
    except (KeyError, ValueError, IndexError) as e:
        raise E4EFormatError(f"{w.origin}: cannot read the e4e/StyleGAN2 architecture from the weights "
                             f"({e}); the file is incomplete or of another model") from e
    if enc.style_count != gen.n_latent or enc.style_dim != gen.style_dim:
        raise E4EFormatError(
            f"{w.origin}: the encoder predicts {enc.style_count}x{enc.style_dim} codes but the generator "
            f"takes {gen.n_latent}x{gen.style_dim}: encoder and decoder come from different models")
    for part, module in (("encoder", _meta(e4e_encoder.Encoder4Editing, enc)),
                         ("decoder", _meta(stylegan2.Generator, gen))):
        _check_keys(w, part, module)
    return enc, gen


def _meta(cls, config) -> nn.Module:
    with torch.device("meta"):
        return cls(config)


def _check_keys(w: _Weights, part: str, module: nn.Module) -> None:
    want = {k: v.shape for k, v in module.state_dict().items()}
    have = {k: v.shape for k, v in w.meta_part(part).items()}
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    wrong = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    if missing or unexpected or wrong:
        def show(keys: List[str]) -> str:
            return ", ".join(f"{part}.{k}" for k in keys[:4]) + (" ..." if len(keys) > 4 else "")
        details = []
        if missing:
            details.append(f"{len(missing)} missing ({show(missing)})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected ({show(unexpected)})")
        if wrong:
            k = wrong[0]
            details.append(f"{len(wrong)} of the wrong shape ({part}.{k}: {tuple(have[k])} "
                           f"instead of {tuple(want[k])})")
        raise E4EFormatError(f"{w.origin}: the weights do not fit e4e's architecture: "
                             + "; ".join(details) + ". The file is incomplete or of another model.")


def _latent_avg(w: _Weights, n_latent: int, dim: int) -> torch.Tensor:
    la = w.latent_avg
    if not isinstance(la, torch.Tensor):
        raise E4EFormatError(f"{w.origin}: no 'latent_avg' tensor: not an e4e checkpoint "
                             "(e4e codes are offsets from the average face)")
    la = la.detach().to(torch.float32).reshape(-1, la.shape[-1]) if la.ndim else la
    if la.ndim != 2 or la.shape[-1] != dim or la.shape[0] not in (1, n_latent):
        raise E4EFormatError(f"{w.origin}: latent_avg has shape {tuple(w.latent_avg.shape)}, "
                             f"expected ({n_latent}, {dim})")
    return la.expand(n_latent, dim).clone()


# --------------------------------------------------------------------------- the model

class E4E:
    """e4e encoder + StyleGAN2 generator + latent_avg, loaded lazily, released on demand."""

    def __init__(self, weights: _Weights, device: Union[str, torch.device, None] = None,
                 dtype: torch.dtype = torch.float32):
        self._weights = weights
        self.encoder_config, self.generator_config = _configs(weights)
        self.n_latent, self.style_dim = self.generator_config.n_latent, self.generator_config.style_dim
        self.size = self.generator_config.size
        self.opts = dict(weights.opts)
        self.device = torch.device(device or "cpu")
        self.dtype = dtype
        self.latent_avg = _latent_avg(weights, self.n_latent, self.style_dim).to(self.device)
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
            module = _meta(cls, cfg)
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
    return E4E(_open(source), device=device, dtype=dtype)


def save_e4e_safetensors(source: Source, out: Union[str, os.PathLike]) -> Path:
    """Convert the official checkpoint (path or dict) to our flat safetensors file (atomic write)."""
    from safetensors.torch import save_file

    w = _open(source)
    enc_cfg, gen_cfg = _configs(w)
    tensors: Dict[str, torch.Tensor] = {}
    for part in PARTS:
        tensors.update({f"{part}.{k}": v.contiguous() for k, v in w.fetch(part).items()})
    tensors["latent_avg"] = _latent_avg(w, gen_cfg.n_latent, gen_cfg.style_dim).contiguous()
    meta = {"format": FORMAT, "version": FORMAT_VERSION,
            "opts": json.dumps(w.opts, default=str, sort_keys=True)}
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m wplus.e4e", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="official e4e .pt -> our safetensors")
    c.add_argument("src")
    c.add_argument("out")
    i = sub.add_parser("info", help="check a checkpoint and print its architecture")
    i.add_argument("src")
    args = p.parse_args(argv)
    from wplus.errors import WPlusError
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
