"""e4e checkpoint files: read the official `.pt`, a dict in memory or our safetensors; check them.

Opening reads only key names, shapes, dtypes and `latent_avg`, and checks the whole file against
the architecture its shapes declare (`configs`) before anything is built: every tensor must be a
plain float CPU tensor (BatchNorm's `num_batches_tracked` counters may be integers), `latent_avg`
a finite (18,512) (or (1,512)) code. A part's weights are fetched (and checked for NaN/inf and for
views claiming more than their storage) only when the model first needs that part.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Sequence, Union

import torch
from torch import nn

from wplus.assets import registry
from wplus.assets.atomic import atomic_path
from wplus.assets.io import (
    SAFETENSORS,
    check_tensor,
    existing_file,
    load_pickle,
    read_safetensors,
    safetensors_header,
    short,
    sniff,
)
from wplus.assets.registry import missing_message
from wplus.errors import E4EFormatError, MissingWeightsError
from wplus.stylegan import encoder as e4e_encoder
from wplus.stylegan import generator as stylegan2

FORMAT = "wplus-e4e"
FORMAT_VERSION = "1"
PARTS = ("encoder", "decoder")
WHAT = "e4e checkpoint"

Source = Union[str, os.PathLike, Dict[str, Any]]

_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
              "I64": torch.int64, "I32": torch.int32}


class Weights:
    """Shapes of every tensor plus a way to fetch one part ("encoder"/"decoder") on demand."""

    def __init__(self, origin: str, shapes: Dict[str, torch.Size], dtypes: Dict[str, torch.dtype],
                 fetch: Callable[[str], Dict[str, torch.Tensor]], latent_avg: Any, opts: Any):
        self.origin, self.shapes, self.dtypes = origin, shapes, dtypes
        self._fetch, self.latent_avg = fetch, latent_avg
        self.opts = dict(opts) if isinstance(opts, dict) else {}
        for key, dtype in dtypes.items():
            _check_dtype(key, dtype, origin)

    def meta_part(self, part: str) -> Dict[str, torch.Tensor]:
        n = len(part) + 1
        return {k[n:]: torch.empty(s, dtype=self.dtypes[k], device="meta")
                for k, s in self.shapes.items() if k.startswith(part + ".")}

    def fetch(self, part: str) -> Dict[str, torch.Tensor]:
        """The part's tensors (keys without the part prefix), each checked before use."""
        tensors = self._fetch(part)
        for key, t in tensors.items():
            check_tensor(t, f"{part}.{key}", self.origin, E4EFormatError, floating=_must_float(key))
        return tensors


def _must_float(key: str) -> bool:
    return not key.endswith("num_batches_tracked")


def _check_dtype(key: str, dtype: torch.dtype, origin: str) -> None:
    if _must_float(key) and dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise E4EFormatError(f"{origin}: '{key}' holds {str(dtype).replace('torch.', '')} values; e4e "
                             "weights must be float32, float16 or bfloat16: the file is damaged or of another model")


def _split(flat: Dict[str, Any], part: str) -> Dict[str, torch.Tensor]:
    n = len(part) + 1
    return {k[n:]: v for k, v in flat.items() if k.startswith(part + ".")}


def _from_dict(ckpt: Any, origin: str) -> Weights:
    if not isinstance(ckpt, dict):
        raise E4EFormatError(f"{origin}: expected a checkpoint dict, got {type(ckpt).__name__}")
    flat = ckpt.get("state_dict", ckpt)
    if not isinstance(flat, dict):
        raise E4EFormatError(f"{origin}: 'state_dict' is a {type(flat).__name__}, not a dict of tensors")
    named = {k: v for k, v in flat.items() if isinstance(k, str) and k.split(".")[0] in PARTS}
    _require_parts(named, list(flat) if flat is ckpt else ["state_dict"] + list(flat), origin)
    for key, value in named.items():  # cheap checks now; values (NaN, storage) when a part is fetched
        if not isinstance(value, torch.Tensor):
            raise E4EFormatError(f"{origin}: '{key}' is a {type(value).__name__}, not a tensor: "
                                 "the file is damaged or of another model")
        if value.layout != torch.strided or value.device.type != "cpu":
            check_tensor(value, key, origin, E4EFormatError, floating=False, finite=False)
    return Weights(origin, {k: v.shape for k, v in named.items()}, {k: v.dtype for k, v in named.items()},
                   lambda part: _split(named, part), ckpt.get("latent_avg"), ckpt.get("opts"))


def _require_parts(keys: Iterable[str], all_keys: Sequence[Any], origin: str) -> None:
    present = {k.split(".")[0] for k in keys}
    missing = [p for p in PARTS if p not in present]
    if missing:
        sample = ", ".join(repr(k) for k in list(all_keys)[:5]) or "nothing"
        raise E4EFormatError(
            f"{origin}: not an e4e checkpoint: no '{missing[0]}.*' weights (it holds {sample}). "
            "Use the official e4e_ffhq_encode.pt or its safetensors conversion.")


def _from_safetensors(path: Path) -> Weights:
    origin = short(path)
    meta, info = safetensors_header(path, WHAT, E4EFormatError)
    _require_parts(info, list(info), origin)
    unknown = next(((k, d) for k, (d, _) in info.items() if d not in _ST_DTYPES), None)
    if unknown:
        raise E4EFormatError(f"{origin}: '{unknown[0]}' is stored as {unknown[1]}; e4e weights must be "
                             "F32, F16 or BF16: the file is damaged or of another model")
    latent_avg = (read_safetensors(path, WHAT, E4EFormatError, keys=["latent_avg"])[0]["latent_avg"]
                  if "latent_avg" in info else None)
    try:
        opts = json.loads(meta.get("opts", "{}"))
    except (ValueError, RecursionError):
        opts = {}

    def fetch(part: str) -> Dict[str, torch.Tensor]:
        n = len(part) + 1
        tensors = read_safetensors(path, WHAT, E4EFormatError, keys=lambda k: k.startswith(part + "."))[0]
        return {k[n:]: _aligned(t) for k, t in tensors.items()}

    named = {k: v for k, v in info.items() if k.split(".")[0] in PARTS}
    return Weights(origin, {k: torch.Size(s) for k, (_, s) in named.items()},
                   {k: _ST_DTYPES[d] for k, (d, _) in named.items()}, fetch, latent_avg, opts)


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """Tensors are assigned, not copied, into the model: a safetensors payload sits at any byte offset,
    and oneDNN takes another (not bit-identical) kernel path for unaligned weights, so give each one
    the allocator's 64-byte alignment — the same file then gives the same codes as the .pt."""
    return t if t.data_ptr() % 64 == 0 else t.clone()


def _from_torch_file(path: Path) -> Weights:
    ckpt = load_pickle(path, WHAT, E4EFormatError, mmap=True)
    w = _from_dict(ckpt, short(path))
    del ckpt

    def fetch(part: str) -> Dict[str, torch.Tensor]:  # re-read: nothing stays loaded after release()
        ckpt = load_pickle(path, WHAT, E4EFormatError, mmap=True)
        return _split(ckpt.get("state_dict", ckpt), part)

    w._fetch = fetch
    return w


def open_weights(source: Source) -> Weights:
    """A dict in memory, or a file told apart by content (safetensors or a torch pickle)."""
    if isinstance(source, dict):
        return _from_dict(source, "e4e checkpoint dict")
    if not str(source).strip():
        raise MissingWeightsError(missing_message(
            registry.get("e4e"), None, "the e4e path given is empty (leave it unset to use the models folder)"))
    path = existing_file(source, WHAT, E4EFormatError, missing=lambda _text: MissingWeightsError(
        missing_message(registry.get("e4e"), None, "no file at that path", path=Path(source))))
    return _from_safetensors(path) if sniff(path) == SAFETENSORS else _from_torch_file(path)


# --------------------------------------------------------------------------- architecture

def configs(w: Weights):
    """(encoder config, generator config) read from the shapes; every key and shape checked."""
    try:
        enc = e4e_encoder.config_from_state_dict(w.meta_part("encoder"))
        gen = stylegan2.config_from_state_dict(w.meta_part("decoder"))
        if gen.size < 8 or gen.size & (gen.size - 1) or len(enc.widths) != 4:
            raise ValueError("an unsupported layout")
    except (KeyError, ValueError, IndexError, TypeError, RuntimeError) as e:
        raise E4EFormatError(f"{w.origin}: cannot read the e4e/StyleGAN2 architecture from the weights "
                             f"({e}); the file is incomplete or of another model") from e
    if enc.style_count != gen.n_latent or enc.style_dim != gen.style_dim:
        raise E4EFormatError(
            f"{w.origin}: the encoder predicts {enc.style_count}x{enc.style_dim} codes but the generator "
            f"takes {gen.n_latent}x{gen.style_dim}: encoder and decoder come from different models")
    for part, module in (("encoder", meta_module(e4e_encoder.Encoder4Editing, enc)),
                         ("decoder", meta_module(stylegan2.Generator, gen))):
        _check_keys(w, part, module)
    return enc, gen


def meta_module(cls, config) -> nn.Module:
    with torch.device("meta"):
        return cls(config)


def _check_keys(w: Weights, part: str, module: nn.Module) -> None:
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


def latent_avg(w: Weights, n_latent: int, dim: int) -> torch.Tensor:
    """The checkpoint's average code as (n_latent, dim) float32: finite, of a shape that fits."""
    la = w.latent_avg
    if not isinstance(la, torch.Tensor):
        raise E4EFormatError(f"{w.origin}: no 'latent_avg' tensor: not an e4e checkpoint "
                             "(e4e codes are offsets from the average face)")
    shape = tuple(la.shape)
    if len(shape) not in (1, 2, 3) or shape[-1] != dim or la.numel() not in (dim, n_latent * dim):
        raise E4EFormatError(f"{w.origin}: latent_avg has shape {shape}, expected ({n_latent}, {dim})")
    check_tensor(la, "latent_avg", w.origin, E4EFormatError)
    return la.detach().to(torch.float32).reshape(-1, dim).expand(n_latent, dim).clone()


def save_e4e_safetensors(source: Source, out: Union[str, os.PathLike]) -> Path:
    """Convert the official checkpoint (path or dict) to our flat safetensors file (atomic write)."""
    from safetensors.torch import save_file

    w = open_weights(source)
    _, gen_cfg = configs(w)
    tensors: Dict[str, torch.Tensor] = {}
    for part in PARTS:
        tensors.update({f"{part}.{k}": v.contiguous() for k, v in w.fetch(part).items()})
    tensors["latent_avg"] = latent_avg(w, gen_cfg.n_latent, gen_cfg.style_dim).contiguous()
    meta = {"format": FORMAT, "version": FORMAT_VERSION,
            "opts": json.dumps(w.opts, default=str, sort_keys=True)}
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(out)
