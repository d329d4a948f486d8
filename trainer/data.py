"""Datasets of both stages, read from a prepare.py manifest, with resumable deterministic order.

Manifest: JSON lines, one record per sample, paths relative to the manifest's folder:
    {"id": "00017", "aligned": "aligned/00017.png", "mask": "masks/00017.png",
     "wplus": "wplus/00017.safetensors", "wild": "wild/00017.jpg", "wild_mask": "wild_masks/00017.png",
     "captions": ["a man in a park"]}
Stage I needs `aligned` + `wplus`; Stage II needs `wild` + `wild_mask` + `wplus` (the W+ of the same
person's aligned face). Every random choice of a sample (prompt, drops, augmentation) comes from a
seed fixed by its position in the sample stream, so a resumed run sees exactly the same batches.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter
from scipy.ndimage import distance_transform_cdt

from trainer.config import TrainConfig
from wplus.geometry import WPLUS_SHAPE
from wplus.identity.files import load_identity
from wplus.stylegan.pixels import to_input


# ----------------------------------------------------------------------------- manifest
def read_manifest(path: str | Path) -> list[dict]:
    """Records with absolute paths; a clear error for a missing or malformed manifest."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} not found; write one with: python trainer/prepare.py")
    root = path.resolve().parent
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not JSON ({e})") from None
        for key in ("aligned", "mask", "wplus", "wild", "wild_mask"):
            if rec.get(key):
                rec[key] = str(root / rec[key])
        records.append(rec)
    return records


def stage_records(records: list[dict], stage: int) -> list[dict]:
    need = ("aligned", "wplus") if stage == 1 else ("wild", "wild_mask", "wplus")
    usable = [r for r in records if all(r.get(k) for k in need)]
    if not usable:
        raise ValueError(f"the manifest has no Stage {stage} samples (records with {', '.join(need)})")
    missing = [r[k] for r in usable for k in need if not Path(r[k]).is_file()]
    if missing:
        raise ValueError(f"{len(missing)} file(s) named in the manifest do not exist, e.g. {missing[:3]}; "
                         "paths are relative to the manifest's folder")
    return usable


def load_wplus(path: str | Path) -> torch.Tensor:
    """A W+ code as (18,512) float32: identity files and official N.pth via `wplus.identity`, or .npy."""
    path = Path(path)
    if path.suffix != ".npy":
        return load_identity(path).wplus
    w = torch.from_numpy(np.load(path)).float().reshape(-1, *WPLUS_SHAPE)
    if w.shape[0] != 1:
        raise ValueError(f"{path}: expected one W+ code (18,512), found {tuple(w.shape)}")
    return w[0].contiguous()


# ----------------------------------------------------------------------------- order
@dataclass
class StreamSampler:
    """Batches of (index, sample_seed) for one process, starting at a given micro-batch.

    The global stream is epoch after epoch of seeded permutations; global micro-batch k holds
    positions [k*G, (k+1)*G) with G = batch_size * world_size, and this process takes its slice.
    Resuming at micro-batch k replays exactly what an uninterrupted run would have seen.
    """

    n: int
    batch_size: int
    seed: int
    world_size: int = 1
    rank: int = 0
    start: int = 0

    def _perm(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        k, cache = self.start, {}
        gb = self.batch_size * self.world_size
        while True:
            batch = []
            for p in range(k * gb + self.rank * self.batch_size, k * gb + (self.rank + 1) * self.batch_size):
                epoch = p // self.n
                if epoch not in cache:
                    cache = {epoch: self._perm(epoch)}
                batch.append((cache[epoch][p % self.n], _mix(self.seed, p)))
            yield batch
            k += 1


def _mix(seed: int, p: int) -> int:
    return (seed * 0x9E3779B1 + p * 0x85EBCA77 + 0x165667B1) % (2 ** 63)


# ----------------------------------------------------------------------------- text
def pick_text(rng: random.Random, cfg: TrainConfig, rec: dict) -> str:
    captions = [c.strip() for c in rec.get("captions") or [] if c and c.strip()]
    if cfg.stage == 1:
        if captions and rng.random() < cfg.caption_prob:
            return rng.choice(captions)
        return rng.choice(cfg.templates).format(cfg.subject)
    return rng.choice(captions) if captions else cfg.default_caption


def pick_drop(rng: random.Random, cfg: TrainConfig) -> tuple[bool, bool]:
    """(drop identity, drop text) with the paper's three disjoint drop rates."""
    r = rng.random()
    if r < cfg.i_drop_rate:
        return True, False
    if r < cfg.i_drop_rate + cfg.t_drop_rate:
        return False, True
    if r < cfg.i_drop_rate + cfg.t_drop_rate + cfg.ti_drop_rate:
        return True, True
    return False, False


# ----------------------------------------------------------------------------- images
def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL -> (3,H,W) in [-1,1]."""
    return to_input(img, size=None)[0].contiguous()


def mask_tensor(mask: Image.Image) -> torch.Tensor:
    """L PIL -> (1,H,W) in [0,1]."""
    return torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)[None]


def square_resize(img: Image.Image, size: int, resample=Image.BICUBIC) -> Image.Image:
    """Centre-crop to a square, then resize."""
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return img.resize((size, size), resample) if s != size else img


def face_box(mask: np.ndarray) -> Optional[tuple[int, int, int, int]]:
    ys, xs = np.nonzero(mask > 127)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def augment_wild(rng: random.Random, img: Image.Image, mask: Image.Image, cfg: TrainConfig
                 ) -> tuple[Image.Image, Image.Image]:
    """Rotate about the face, zoom, crop a square that keeps the face in view, resize, jitter."""
    img, mask = img.convert("RGB"), mask.convert("L")
    w, h = img.size
    box = face_box(np.asarray(mask))
    if box is None:
        box = (w // 4, h // 4, 3 * w // 4, 3 * h // 4)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    if cfg.augment and cfg.aug_rotate > 0:
        angle = rng.uniform(-cfg.aug_rotate, cfg.aug_rotate)
        img = img.rotate(angle, Image.BILINEAR, center=(cx, cy), fillcolor=_edge_colour(img))
        mask = mask.rotate(angle, Image.BILINEAR, center=(cx, cy), fillcolor=0)
    side = float(min(w, h))
    if cfg.augment:
        side = side / rng.uniform(*cfg.aug_scale)
    fw, fh = box[2] - box[0], box[3] - box[1]
    side = max(8.0, min(max(side, max(fw, fh) * 1.1), float(max(w, h)) * 1.5))
    x0 = _offset(rng, box[0], box[2], side, w, cfg.augment)
    y0 = _offset(rng, box[1], box[3], side, h, cfg.augment)
    crop = (round(x0), round(y0), round(x0 + side), round(y0 + side))
    size = (cfg.resolution, cfg.resolution)
    img = img.crop(crop).resize(size, Image.BICUBIC)
    mask = mask.crop(crop).resize(size, Image.BILINEAR)
    if cfg.augment and cfg.aug_color > 0:
        for enh in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            img = enh(img).enhance(rng.uniform(1 - cfg.aug_color, 1 + cfg.aug_color))
    return img, mask


def _edge_colour(img: Image.Image) -> tuple[int, int, int]:
    arr = np.asarray(img)
    edge = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    return tuple(int(v) for v in edge.mean(0))


def _offset(rng: random.Random, lo: int, hi: int, side: float, extent: int, random_pos: bool) -> float:
    """Crop start so that [lo,hi) lies inside [start, start+side), preferring the image area."""
    a, b = hi - side, float(lo)  # positions keeping the face inside
    if a > b:
        return (lo + hi - side) / 2
    a2, b2 = max(a, 0.0), min(b, extent - side)  # ... and the crop inside the image
    if a2 <= b2:
        a, b = a2, b2
    return rng.uniform(a, b) if random_pos else (a + b) / 2


def soften_mask(rng: random.Random, mask: Image.Image, cfg: TrainConfig) -> Image.Image:
    """Erode then blur the face mask, both relative to the face size (the paper's soft edge)."""
    arr = np.asarray(mask, dtype=np.float32) / 255.0
    face = arr > 0.5
    area = float(face.sum())
    if area == 0:
        return mask
    size = math.sqrt(area)
    erode = rng.uniform(*cfg.mask_erode) * size
    blur = rng.uniform(*cfg.mask_blur) * size
    if erode >= 1:
        dist = distance_transform_cdt(face, metric="chessboard")
        eroded = dist > erode / 2
        face = eroded if eroded.any() else face  # a tiny face keeps its mask rather than vanish
    out = Image.fromarray((face * 255).astype(np.uint8))
    if blur >= 1:
        out = out.filter(ImageFilter.GaussianBlur(radius=0.15 * blur))
    return out


# ----------------------------------------------------------------------------- dataset
class WPlusDataset(torch.utils.data.Dataset):
    """Stage I (aligned faces) or Stage II (in-the-wild) samples; items are keyed by (index, seed)."""

    def __init__(self, records: Sequence[dict], cfg: TrainConfig):
        self.records = list(records)
        self.cfg = cfg

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        idx, seed = key
        rec, cfg = self.records[idx], self.cfg
        rng = random.Random(seed)
        text = pick_text(rng, cfg, rec)
        drop_id, drop_text = pick_drop(rng, cfg)
        w = load_wplus(rec["wplus"])
        if drop_id:
            w = torch.zeros_like(w)
        item = {"text": "" if drop_text else text, "wplus": w, "id_dropped": drop_id,
                "id": rec.get("id", str(idx)), "seed": seed}
        if cfg.stage == 1:
            img = Image.open(rec["aligned"]).convert("RGB")
            if cfg.mask_background and rec.get("mask"):
                m = Image.open(rec["mask"]).convert("L").resize(img.size, Image.BILINEAR)
                img = Image.composite(img, Image.new("RGB", img.size, (255, 255, 255)), m)
            item["pixels"] = to_tensor(square_resize(img, cfg.resolution))
        else:
            img, mask = augment_wild(rng, Image.open(rec["wild"]), Image.open(rec["wild_mask"]), cfg)
            item["pixels"] = to_tensor(img)
            item["face_mask"] = mask_tensor(soften_mask(rng, mask, cfg))
        return item


def collate(items: list[dict]) -> dict:
    out = {
        "pixels": torch.stack([i["pixels"] for i in items]),
        "wplus": torch.stack([i["wplus"] for i in items]),
        "id_dropped": torch.tensor([i["id_dropped"] for i in items]),
        "text": [i["text"] for i in items],
        "id": [i["id"] for i in items],
        "seed": [i["seed"] for i in items],
    }
    if "face_mask" in items[0]:
        out["face_mask"] = torch.stack([i["face_mask"] for i in items])
    return out


def make_loader(cfg: TrainConfig, records: Sequence[dict], world_size: int, rank: int, start: int
                ) -> torch.utils.data.DataLoader:
    """An endless loader of this process's micro-batches from micro-batch `start` on."""
    ds = WPlusDataset(records, cfg)
    sampler = StreamSampler(len(ds), cfg.train_batch_size, cfg.seed, world_size, rank, start)
    return torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate,
                                       num_workers=cfg.num_workers,
                                       persistent_workers=cfg.num_workers > 0)
