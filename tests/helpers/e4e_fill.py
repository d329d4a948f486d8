"""The deterministic fill rule of ../shared/fixtures/e4e (see shared/README.md), as a test helper.

`filled_checkpoint(manifest)` rebuilds the official `e4e_ffhq_encode.pt` layout
{"state_dict": {...}, "latent_avg": (18, 512), "opts": {...}} with every tensor filled by the rule,
so the fixture's outputs can be reproduced without the 1 GB real checkpoint. `manifest` may be any
list of {"key", "shape"} entries (tests also use it for small architectures).
"""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import torch


def load_manifest(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def fill_tensor(key: str, shape: List[int], prelu: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    t = torch.randn(shape, generator=g)
    if prelu:
        return 0.25 + 0.05 * t
    if key.endswith("running_var"):
        return 1 + 0.1 * t.abs()
    if key.endswith("running_mean"):
        return 0.1 * t
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    if key.startswith("decoder.noises.noise_"):
        return t
    if key.startswith("decoder.style.") and key.endswith(".weight"):
        return 100 * t
    if len(shape) >= 2:
        if key.startswith("decoder.") and key.endswith("conv.weight") and len(shape) == 5:
            fan_in = shape[2] * shape[3] * shape[4]
        else:
            fan_in = math.prod(shape) // shape[0]
        return t.div_(math.sqrt(fan_in))  # in place: these are most of the ~1 GB
    if key.endswith(".weight"):
        return 1 + 0.1 * t
    return 0.01 * t


def filled_state_dict(entries: Iterable[dict], prelu_keys: Iterable[str] = ()) -> Dict[str, torch.Tensor]:
    prelu = set(prelu_keys)
    return {e["key"]: fill_tensor(e["key"], list(e["shape"]), e["key"] in prelu) for e in entries}


def filled_latent_avg(n_latent: int = 18, dim: int = 512) -> torch.Tensor:
    return 0.1 * torch.randn(n_latent, dim, generator=torch.Generator().manual_seed(12345))


def filled_checkpoint(manifest: dict, opts: Optional[dict] = None) -> dict:
    """The official checkpoint layout, filled by the fixture's rule."""
    sd = filled_state_dict(manifest["state_dict"], manifest.get("prelu_keys", ()))
    return {"state_dict": sd, "latent_avg": filled_latent_avg(),
            "opts": opts if opts is not None else {"encoder_type": "Encoder4Editing",
                                                   "stylegan_size": 1024,
                                                   "start_from_latent_avg": True}}


def manifest_of(modules: Dict[str, torch.nn.Module]) -> dict:
    """Manifest-like entries for arbitrary (e.g. tiny) modules, prefix -> module."""
    entries, prelu = [], []
    for prefix, module in modules.items():
        for name, t in module.state_dict().items():
            key = f"{prefix}.{name}"
            entries.append({"key": key, "shape": list(t.shape)})
        for name, m in module.named_modules():
            if isinstance(m, torch.nn.PReLU):
                prelu.append(f"{prefix}.{name}.weight")
    return {"state_dict": entries, "prelu_keys": prelu}
