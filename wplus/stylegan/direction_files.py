"""Reading edit-direction files: the paper's `w_direction/` folder and a folder of user directions.

Each scan returns (source, stem, Direction fields) items; `wplus.stylegan.directions` names them
(`direction_names.assign_names`) and builds the library. See that module for the formats.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from wplus.assets.io import load_pickle
from wplus.errors import DirectionError, MissingWeightsError
from wplus.geometry import NUM_STYLES, STYLE_DIM
from wplus.stylegan.direction_names import LAYERS, group_of


@dataclass(frozen=True)
class GanSpacePCA:
    mean: torch.Tensor  # (512,)
    comp: torch.Tensor  # (K, 512)
    std: torch.Tensor  # (K,)


def _as_wplus_vector(t: torch.Tensor | np.ndarray, origin: str) -> torch.Tensor:
    """(512,), (1,512), (18,512) or (1,18,512) -> (18,512) float32."""
    if not isinstance(t, (torch.Tensor, np.ndarray)):
        raise DirectionError(f"{origin}: expected a tensor or array, found {type(t).__name__}")
    t = torch.as_tensor(t).detach().cpu()
    if not torch.is_floating_point(t):
        raise DirectionError(f"{origin}: a direction must hold floats, got {t.dtype}")
    shape = tuple(t.shape)
    if shape in ((STYLE_DIM,), (1, STYLE_DIM)):
        t = t.reshape(1, STYLE_DIM).expand(NUM_STYLES, STYLE_DIM)
    elif shape in ((NUM_STYLES, STYLE_DIM), (1, NUM_STYLES, STYLE_DIM)):
        t = t.reshape(NUM_STYLES, STYLE_DIM)
    else:
        raise DirectionError(
            f"{origin}: a direction must have shape (512,), (1,512), (18,512) or (1,18,512), got {shape}"
        )
    if not torch.isfinite(t).all():
        raise DirectionError(f"{origin}: the direction holds NaN or infinite values; the file is damaged. Delete "
                             "it and run `python -m wplus download --what directions` again (a direction of your "
                             "own: save it again from finite values)")
    return t.to(torch.float64 if t.dtype == torch.float64 else torch.float32).contiguous()


def _additive(vector: torch.Tensor, source: str, stem: str, bound: float, suggested: float) -> dict:
    return dict(group=group_of(stem), minimum=-bound, maximum=bound, suggested=suggested, step=0.1,
                vector=vector, layers=LAYERS[source])


def scan_official(root: Path) -> list[tuple[str, str, dict]]:
    if not root.is_dir():
        raise MissingWeightsError(
            f"The edit directions folder {root} does not exist. Run `python -m wplus download --what "
            f"directions` or copy the paper's w_direction/ folder there."
        )
    found = []
    for path in sorted((root / "latent_directions").glob("*.npy")):
        vec = _as_wplus_vector(np.load(path, allow_pickle=False), str(path))
        found.append(("latent", path.stem, _additive(vec, "latent", path.stem, 5.0, 2.0)))
    for path in sorted((root / "interfacegan_directions").glob("*.pt")):
        vec = _as_wplus_vector(_torch_load(path), str(path))
        found.append(("interfacegan", path.stem, _additive(vec, "interfacegan", path.stem, 5.0, 3.0)))
    pca_path = root / "gan_space" / "ffhq_pca.pt"
    tables = (root / "gan_space" / "ganspace_configs.csv", root / "ganspace_configs.csv")
    csv_path = next((p for p in tables if p.is_file()), None)
    if pca_path.is_file() and csv_path is not None:
        pca = load_ganspace_pca(pca_path)
        for name, comp, first, end, strength in read_ganspace_configs(csv_path):
            if not (0 <= comp < pca.comp.shape[0] and 0 <= first < end <= NUM_STYLES):
                raise DirectionError(f"{csv_path}: row {name!r} has component {comp} / layers [{first},{end}) "
                                     "out of range")
            bound = float(max(10, math.ceil(1.5 * abs(strength))))
            found.append(("ganspace", name, dict(
                group=group_of(name), minimum=-bound, maximum=bound, suggested=float(strength),
                step=0.5, component=comp, layers=(first, end), pca=pca,
            )))
    return found


def scan_user(root: Path) -> list[tuple[str, str, dict]]:
    found = []
    for path in sorted(root.iterdir()):
        suffix = path.suffix.lower()
        if suffix not in (".npy", ".pt", ".pth", ".safetensors") or not path.is_file():
            continue
        meta: dict[str, str] = {}
        if suffix == ".npy":
            tensors = {path.stem: np.load(path, allow_pickle=False)}
        elif suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                keys = list(f.keys())
                tensors = {(path.stem if len(keys) == 1 else k): f.get_tensor(k) for k in keys}
        else:
            obj = _torch_load(path)
            tensors = obj if isinstance(obj, dict) else {path.stem: obj}
        for stem, t in tensors.items():
            vector = _as_wplus_vector(t, f"{path}[{stem}]")
            found.append(("user", str(stem), _user_kwargs(vector, str(stem), meta, path)))
    return found


def _user_kwargs(vec: torch.Tensor, stem: str, meta: Mapping[str, str], path: Path) -> dict:
    """Safetensors metadata may set `group`, `min`, `max`, `suggested` and `layers` ("FIRST:END",
    the rows [FIRST, END) the direction moves, as a GANSpace table row; default all 18)."""
    try:
        lo = float(meta.get("min", -5.0))
        hi = float(meta.get("max", 5.0))
        suggested = float(meta.get("suggested", 2.0))
    except ValueError as exc:
        raise DirectionError(f"{path}: bad slider metadata ({exc})") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < 0.0 < hi):
        raise DirectionError(f"{path}: the slider range min {lo:g} .. max {hi:g} must include 0 (no edit)")
    layers = LAYERS["user"]
    if "layers" in meta:
        first, sep, end = str(meta["layers"]).partition(":")
        try:
            layers = (int(first), int(end))
        except ValueError:
            layers = (-1, -1)
        if not sep or not 0 <= layers[0] < layers[1] <= NUM_STYLES:
            raise DirectionError(f"{path}: metadata layers={meta['layers']!r} must be 'FIRST:END' with "
                                 f"0 <= FIRST < END <= {NUM_STYLES} (e.g. '0:8' for layers 0-7)")
    group = meta.get("group", group_of(stem))
    return dict(group=group, minimum=lo, maximum=hi, suggested=suggested, step=0.1, vector=vec, layers=layers)


def _torch_load(path: Path):
    try:
        return load_pickle(path)
    except Exception as exc:  # a pickle with code, or a corrupt file
        raise DirectionError(f"{path} is not a plain tensor file torch can load safely ({exc})") from None


def load_ganspace_pca(path: str | os.PathLike) -> GanSpacePCA:
    data = _torch_load(Path(path))
    try:
        mean = torch.as_tensor(data["mean"]).reshape(-1).float()
        comp = torch.as_tensor(data["comp"]).float()
        comp = comp.reshape(comp.shape[0], -1)
        std = torch.as_tensor(data["std"]).reshape(-1).float()
    except (KeyError, TypeError, RuntimeError) as exc:
        raise DirectionError(f"{path}: expected a GANSpace dict {{mean, comp, std}} ({exc})") from None
    if mean.numel() != STYLE_DIM or comp.shape[1] != STYLE_DIM or std.numel() != comp.shape[0]:
        raise DirectionError(f"{path}: GANSpace shapes mean {tuple(mean.shape)}, comp {tuple(comp.shape)}, "
                             f"std {tuple(std.shape)} do not fit W ({STYLE_DIM})")
    return GanSpacePCA(mean=mean, comp=comp, std=std)


def read_ganspace_configs(path: str | os.PathLike) -> list[tuple[str, int, int, int, float]]:
    """Rows (name, component, first layer, end layer, strength); tab- or comma-separated."""
    rows = []
    with open(path, newline="") as f:
        text = f.read()
    delimiter = "\t" if "\t" in text else ","
    for i, row in enumerate(csv.reader(text.splitlines(), delimiter=delimiter), 1):
        row = [c.strip() for c in row if c.strip()]
        if not row or row[0].startswith("#"):
            continue
        try:
            name, comp, first, end, strength = row[0], int(row[1]), int(row[2]), int(row[3]), float(row[4])
        except (IndexError, ValueError):
            raise DirectionError(f"{path}:{i}: expected 'name component first end strength', got {row}") from None
        rows.append((name, comp, first, end, strength))
    return rows


