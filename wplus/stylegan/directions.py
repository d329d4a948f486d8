"""StyleGAN W+ edit directions (the paper's three formats plus user files) and identity mixing.

Formats, as the paper's code uses them:
- `latent_directions/*.npy` (18,512) float64: added, `w + s * d`;
- `interfacegan_directions/*.pt` (1,512) unit vectors: broadcast to the 18 layers, `w + s * d`;
- GANSpace `gan_space/ffhq_pca.pt` {mean (1,512), comp (80,1,512), std (80)} + `ganspace_configs.csv`
  (name, component, first layer, end layer, suggested strength): the edit *sets* the component's
  coordinate, measured on layer 0 in units of its std, to the strength `s` on layers
  [first, end):  c = <w[0] - mean, comp_k> / std_k ;  w[first:end] += (s - c) * comp_k * std_k.
- user folder: `.npy` / `.pt` / `.safetensors` tensors of shape (512,), (1,512), (18,512) or
  (1,18,512), added like the latent directions.

Strength 0 means "no edit" for every direction (a slider at rest never changes the face), so a
GANSpace edit is applied only for a non-zero strength.
"""
from __future__ import annotations

import csv
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from wplus.assets.io import load_pickle
from wplus.errors import DirectionError, MissingWeightsError
from wplus.geometry import NUM_STYLES, STYLE_DIM, STYLE_GROUPS
from wplus.stylegan.edit_text import parse_edits  # noqa: F401 (public here: the CLI's --edit parser)

GROUPS = ("expression", "age & gender", "pose", "shape", "hair", "appearance", "lighting", "other")
SOURCES = ("interfacegan", "latent", "ganspace", "user")  # priority for plain names

_GROUP_OF = {
    "expression": (
        "smile", "emotion_angry", "emotion_disgust", "emotion_easy", "emotion_fear", "emotion_happy",
        "emotion_sad", "emotion_surprise", "eyes_open", "big_smile", "caricature_smile", "scary_eyes",
        "disgusted", "displeased", "eye_openness", "fearful_eyes", "huge_grin", "in_awe", "wide_smile",
        "screaming", "show_front_teeth", "happy_frizzy_hair",
    ),
    "age & gender": (
        "age", "gender", "elderly_woman", "happy_elderly_lady", "boyishness", "wrinkles", "eye_wrinkles",
        "lipstick_and_age",
    ),
    "pose": ("angle_horizontal", "angle_pitch", "head_angle_up"),
    "shape": ("face_shape", "width", "height", "face_roundness", "large_jaw", "short_face", "nose_length"),
    "hair": (
        "frizzy_hair", "bald", "curly_hair", "dark_hair", "hairline", "straight_bowl_cut", "white_hair",
    ),
    "appearance": (
        "beauty", "glasses", "race_black", "race_white", "race_yellow", "lipstick", "mascara_vs_beard",
        "trimmed_beard", "eyebrow_thickness",
    ),
    "lighting": (
        "background_blur", "dark_bg_shiny_hair", "dark_hair_and_light_pos", "light_lr", "overexposed",
        "sunlight_in_face",
    ),
}
GROUP_OF: dict[str, str] = {name: group for group, names in _GROUP_OF.items() for name in names}


@dataclass(frozen=True)
class GanSpacePCA:
    mean: torch.Tensor  # (512,)
    comp: torch.Tensor  # (K, 512)
    std: torch.Tensor  # (K,)


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
    layers: tuple[int, int] = (0, NUM_STYLES)  # GANSpace layer range [first, end)
    pca: GanSpacePCA | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")

    def delta(self, w: torch.Tensor, strength: float) -> torch.Tensor:
        """What this edit adds to `w` (B,18,512), computed in at least float32."""
        work = w.to(_work_dtype(w.dtype))
        if self.vector is not None:  # kept at the file's precision (float64 for the .npy files)
            dtype = torch.promote_types(work.dtype, self.vector.dtype)
            return strength * self.vector.to(device=work.device, dtype=dtype)
        pca = self.pca
        comp = pca.comp[self.component].to(work)
        std = pca.std[self.component].to(work)
        coord = ((work[:, 0] - pca.mean.to(work)) @ comp) / std  # (B,)
        step = ((strength - coord) * std)[:, None] * comp  # (B,512)
        out = torch.zeros_like(work)
        first, end = self.layers
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
            found += _scan_official(Path(official))
        if user is not None and Path(user).is_dir():
            found += _scan_user(Path(user))
        return cls(_name_all(found))

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
        order = {g: i for i, g in enumerate(GROUPS)}
        items = [d for d in self._by_name.values() if group is None or d.group == group]
        return sorted(items, key=lambda d: (order.get(d.group, len(GROUPS)), d.name))

    def by_group(self) -> dict[str, list[Direction]]:
        out: dict[str, list[Direction]] = {}
        for d in self.list():
            out.setdefault(d.group, []).append(d)
        return out

    def get(self, name: str) -> Direction:
        d = self._by_name.get(name) or self._by_key.get(name)
        if d is None:
            near = [n for n in self.names() if name.lower() in n.lower()][:8]
            hint = f" Did you mean: {', '.join(near)}?" if near else " Run `python -m wplus directions` to list them."
            raise DirectionError(f"unknown edit direction {name!r}.{hint}")
        return d


def _name_all(found: list[tuple[str, str, dict]]) -> list[Direction]:
    """Plain names go to the highest-priority source; the others keep `source/stem`."""
    rank = {s: i for i, s in enumerate(SOURCES)}
    taken: set[str] = set()
    out = []
    for source, stem, kwargs in sorted(found, key=lambda f: (rank[f[0]], f[1])):
        key = f"{source}/{stem}"
        name = stem if stem not in taken else key
        taken.add(name)
        out.append(Direction(name=name, key=key, source=source, **kwargs))
    return out


# --- loading -------------------------------------------------------------------------------------


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
        raise DirectionError(f"{origin}: the direction holds NaN or infinite values")
    return t.to(torch.float64 if t.dtype == torch.float64 else torch.float32).contiguous()


def _additive(vector: torch.Tensor, group: str, bound: float, suggested: float) -> dict:
    return dict(group=group, minimum=-bound, maximum=bound, suggested=suggested, step=0.1, vector=vector)


def _scan_official(root: Path) -> list[tuple[str, str, dict]]:
    if not root.is_dir():
        raise MissingWeightsError(
            f"The edit directions folder {root} does not exist. Run `python -m wplus download --what "
            f"directions` or copy the paper's w_direction/ folder there."
        )
    found = []
    for path in sorted((root / "latent_directions").glob("*.npy")):
        vec = _as_wplus_vector(np.load(path, allow_pickle=False), str(path))
        found.append(("latent", path.stem, _additive(vec, GROUP_OF.get(path.stem, "other"), 5.0, 2.0)))
    for path in sorted((root / "interfacegan_directions").glob("*.pt")):
        vec = _as_wplus_vector(_torch_load(path), str(path))
        found.append(("interfacegan", path.stem, _additive(vec, GROUP_OF.get(path.stem, "other"), 5.0, 3.0)))
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
                group=GROUP_OF.get(name, "other"), minimum=-bound, maximum=bound, suggested=float(strength),
                step=0.5, component=comp, layers=(first, end), pca=pca,
            )))
    return found


def _scan_user(root: Path) -> list[tuple[str, str, dict]]:
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
    """Safetensors metadata may set `group`, `min`, `max`, `suggested`."""
    try:
        lo = float(meta.get("min", -5.0))
        hi = float(meta.get("max", 5.0))
        suggested = float(meta.get("suggested", 2.0))
    except ValueError as exc:
        raise DirectionError(f"{path}: bad slider metadata ({exc})") from None
    group = meta.get("group", GROUP_OF.get(stem, "other"))
    return dict(group=group, minimum=lo, maximum=hi, suggested=suggested, step=0.1, vector=vec)


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


USER_SUBDIR = "w_direction_user"


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
