"""StyleGAN W+ edit directions (the paper's three formats plus user files) and identity mixing.

Formats, as the paper's code uses them (`test_demo.ipynb`, `script/utils_direction.py`), and the
W+ layers each moves (`direction_names.LAYERS`):
- `latent_directions/*.npy` (18,512) float64: added on layers 0-7 only, `w[:8] + s * d[:8]`;
- `interfacegan_directions/*.pt` (1,512) unit vectors: broadcast to all 18 layers, `w + s * d`;
- GANSpace `gan_space/ffhq_pca.pt` {mean (1,512), comp (80,1,512), std (80)} + `ganspace_configs.csv`
  (name, component, first layer, end layer, suggested strength): the edit *sets* the component's
  coordinate, measured on layer 0 in units of its std, to the strength `s` on layers
  [first, end):  c = <w[0] - mean, comp_k> / std_k ;  w[first:end] += (s - c) * comp_k * std_k.
- user folder: `.npy` / `.pt` / `.safetensors` tensors of shape (512,), (1,512), (18,512) or
  (1,18,512), added on all 18 layers, or on the rows a safetensors file's `layers` metadata names.

Strength 0 means "no edit" for every direction (a slider at rest never changes the face), so a
GANSpace edit is applied only for a non-zero strength. Files are read by
`wplus.stylegan.direction_files`; names, groups and order come from `wplus.stylegan.direction_names`.
"""
from __future__ import annotations

import difflib
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch

from wplus.errors import DirectionError
from wplus.geometry import NUM_STYLES, STYLE_DIM, STYLE_GROUPS
from wplus.stylegan.direction_files import (  # noqa: F401 (GanSpacePCA, read_ganspace_configs: public here)
    GanSpacePCA,
    load_ganspace_pca,
    read_ganspace_configs,
    scan_official,
    scan_user,
)
from wplus.stylegan.direction_names import GROUP_OF, GROUPS, SOURCES, assign_names, describe_layers, sort_key  # noqa: F401
from wplus.stylegan.edit_text import parse_edits  # noqa: F401 (public here: the CLI's --edit parser)

USER_SUBDIR = "w_direction_user"


@dataclass(frozen=True, eq=False)
class Direction:
    """One slider. `name` is unique in its library; `key` is always `source/stem`."""

    name: str
    key: str
    source: str
    group: str
    minimum: float
    maximum: float
    suggested: float  # a strength that shows the effect clearly
    step: float = 0.1
    default: float = 0.0  # the slider's rest value: no edit
    vector: torch.Tensor | None = None  # (18,512) for additive directions
    component: int | None = None  # GANSpace
    layers: tuple[int, int] = (0, NUM_STYLES)  # the W+ rows [first, end) the edit moves
    pca: GanSpacePCA | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")

    @property
    def layers_text(self) -> str:
        return describe_layers(self.layers)

    def delta(self, w: torch.Tensor, strength: float) -> torch.Tensor:
        """What this edit adds to `w` (B,18,512), computed in at least float32."""
        work = w.to(_work_dtype(w.dtype))
        first, end = self.layers
        if self.vector is not None:  # kept at the file's precision (float64 for the .npy files)
            dtype = torch.promote_types(work.dtype, self.vector.dtype)
            out = torch.zeros(work.shape, dtype=dtype, device=work.device)
            out[:, first:end] = strength * self.vector[first:end].to(device=work.device, dtype=dtype)
            return out
        pca = self.pca
        comp = pca.comp[self.component].to(work)
        std = pca.std[self.component].to(work)
        coord = ((work[:, 0] - pca.mean.to(work)) @ comp) / std  # (B,)
        step = ((strength - coord) * std)[:, None] * comp  # (B,512)
        out = torch.zeros_like(work)
        out[:, first:end] = step[:, None, :]
        return out


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class DirectionLibrary:
    """All directions available: the paper's folder (`w_direction/`) and a user folder."""

    def __init__(self, directions: Iterable[Direction] = ()):
        self._by_name: dict[str, Direction] = {}
        self._by_key: dict[str, Direction] = {}
        for d in directions:
            self.add(d)

    def add(self, direction: Direction) -> None:
        if direction.name in self._by_name or direction.key in self._by_key:
            raise DirectionError(f"two directions are called {direction.name!r} ({direction.key})")
        self._by_name[direction.name] = direction
        self._by_key[direction.key] = direction

    @classmethod
    def from_folders(cls, official: str | os.PathLike | None = None,
                     user: str | os.PathLike | None = None) -> "DirectionLibrary":
        """Load the paper's `w_direction/` folder and/or a folder of user directions."""
        found: list[tuple[str, str, dict]] = []  # (source, stem, Direction kwargs)
        if official is not None:
            found += scan_official(Path(official))
        if user is not None and Path(user).is_dir():
            found += scan_user(Path(user))
        return cls(Direction(name=name, key=key, source=source, **kwargs)
                   for name, key, (source, _, kwargs) in assign_names(found))

    def __len__(self) -> int:
        return len(self._by_name)

    def __iter__(self):
        return iter(self.list())

    def __contains__(self, name: str) -> bool:
        return name in self._by_name or name in self._by_key

    def names(self) -> list[str]:
        return [d.name for d in self.list()]

    def list(self, group: str | None = None) -> list[Direction]:
        """Sorted by group (in GROUPS order), then name."""
        items = [d for d in self._by_name.values() if group is None or d.group == group]
        return sorted(items, key=lambda d: sort_key(d.group, d.name))

    def get(self, name: str) -> Direction:
        d = self._by_name.get(name) or self._by_key.get(name)
        if d is None:
            near = close_names(name, self.names())
            hint = f" Did you mean: {', '.join(near)}?" if near else " Run `python -m wplus directions` to list them."
            raise DirectionError(f"unknown edit direction {name!r}.{hint}")
        return d


def close_names(name: str, names: Sequence[str], limit: int = 8) -> list[str]:
    """Names a misspelt `name` may have meant: close matches (`smiel` -> smile), then substrings."""
    lowered = {n.lower(): n for n in names}
    near = [lowered[n] for n in difflib.get_close_matches(name.lower(), list(lowered), n=limit, cutoff=0.6)]
    near += [n for n in names if name.lower() in n.lower() and n not in near]
    return near[:limit]


# --- default library -----------------------------------------------------------------------------

_default_lock = threading.Lock()
_default: dict[tuple, DirectionLibrary] = {}


def default_library(models_dir: str | os.PathLike | None = None, allow_download: bool = True,
                    reload: bool = False) -> DirectionLibrary:
    """The paper's directions from `<models>/w_direction` (fetched if missing) + `<models>/w_direction_user`.

    Loaded once per models folder; `reload=True` rereads it (e.g. after adding user directions)."""
    from wplus.assets import registry
    from wplus.assets.download import ensure_file

    models = Path(models_dir) if models_dir is not None else registry.default_models_dir()
    key = (str(models.resolve()),)
    with _default_lock:
        if reload or key not in _default:
            for entry in registry.direction_files():
                ensure_file(entry, models, allow_download=allow_download)
            _default[key] = DirectionLibrary.from_folders(
                models / registry.DIRECTIONS_SUBDIR, models / USER_SUBDIR
            )
        return _default[key]


# --- applying edits ------------------------------------------------------------------------------


def _as_batch(w: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if not isinstance(w, torch.Tensor):
        raise DirectionError(f"W+ must be a torch tensor, got {type(w).__name__}")
    if tuple(w.shape[-2:]) != (NUM_STYLES, STYLE_DIM) or w.dim() not in (2, 3):
        raise DirectionError(f"W+ must have shape (18,512) or (B,18,512), got {tuple(w.shape)}")
    return (w.unsqueeze(0), True) if w.dim() == 2 else (w, False)


def apply_edits(w: torch.Tensor, edits: Mapping[str, float], library: DirectionLibrary | None = None) -> torch.Tensor:
    """`w` (B,18,512) or (18,512) with every edit applied; the input is not modified.

    Additive directions are summed first; GANSpace edits are then measured on that result and
    each sets its own component, so the outcome does not depend on the order of `edits`.
    Strength 0 (or None) skips a direction.
    """
    batch, squeeze = _as_batch(w)
    active = {name: float(s) for name, s in edits.items() if s is not None and float(s) != 0.0}
    if not active:
        return w.clone()
    for name, s in active.items():
        if not math.isfinite(s):
            raise DirectionError(f"edit strength for {name!r} must be a finite number, got {s}")
    lib = library if library is not None else default_library()
    chosen = [(lib.get(name), s) for name, s in active.items()]
    out = batch.to(_work_dtype(batch.dtype))
    additive = [(d, s) for d, s in chosen if d.vector is not None]
    if additive:
        out = out + sum(d.delta(out, s) for d, s in additive)
    ganspace = [(d, s) for d, s in chosen if d.vector is None]
    if ganspace:
        out = out + sum(d.delta(out, s) for d, s in ganspace)
    out = out.to(batch.dtype)
    return out[0] if squeeze else out


# --- identity interpolation ----------------------------------------------------------------------


def layer_alphas(alpha: float | Mapping[str, float] | Sequence[float]) -> list[float]:
    """One weight per W+ layer from a number, {coarse/middle/fine: a} or 18 numbers."""
    if isinstance(alpha, Mapping):
        unknown = set(alpha) - set(STYLE_GROUPS)
        if unknown:
            raise DirectionError(f"unknown layer group(s) {sorted(unknown)}; use coarse (0-3), middle (4-7), "
                                 "fine (8-17)")
        per = [0.0] * NUM_STYLES
        for group, a in alpha.items():
            for i in STYLE_GROUPS[group]:
                per[i] = float(a)
        return per
    if isinstance(alpha, (int, float)):
        return [float(alpha)] * NUM_STYLES
    per = [float(a) for a in alpha]
    if len(per) != NUM_STYLES:
        raise DirectionError(f"per-layer mixing needs 18 weights, got {len(per)}")
    return per


def mix(w_a: torch.Tensor, w_b: torch.Tensor, alpha: float | Mapping[str, float] | Sequence[float]) -> torch.Tensor:
    """Interpolate identity A towards B: alpha 0 gives A, 1 gives B, exactly (per layer for groups).

    `mix(a, b, {"coarse": 1})` is StyleGAN style mixing: B's pose and face shape, A's details.
    """
    a, squeeze = _as_batch(w_a)
    b, _ = _as_batch(w_b)
    if a.shape[1:] != b.shape[1:] or (a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0])):
        raise DirectionError(f"cannot mix W+ of shapes {tuple(w_a.shape)} and {tuple(w_b.shape)}")
    per = torch.tensor(layer_alphas(alpha), dtype=_work_dtype(a.dtype), device=a.device).view(1, NUM_STYLES, 1)
    b = b.to(device=a.device)
    blended = (a.to(per.dtype) * (1 - per) + b.to(per.dtype) * per).to(a.dtype)
    out = torch.where(per == 0, a, torch.where(per == 1, b.to(a.dtype), blended))
    return out[0] if squeeze and w_b.dim() == 2 else out
