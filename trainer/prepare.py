"""Prepare training data: aligned faces, background masks, W+ codes, in-the-wild face masks, manifest.

    python trainer/prepare.py --faces FACES_DIR [--wild WILD_DIR] --out DATA_DIR --e4e e4e_ffhq_encode.pt

FACES_DIR: face photos for Stage I (any framing; each is detected and FFHQ-aligned).
WILD_DIR: Stage II photos with captions (`name.jpg` + `name.txt`, one caption per line); the face in
each is aligned and encoded (its W+ is the identity), and its mask is mapped back into the photo.
W+ codes come from e4e on the background-removed aligned face (as the paper), or from precomputed
files (`--wplus-dir`, e.g. the official `N.pth`). Writes DATA_DIR/manifest.jsonl (one JSON record
per sample, paths relative to it) and DATA_DIR/skipped.jsonl (images without a usable face, and
why). Resumable: samples already in the manifest are not redone.
"""
from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import Image, ImageOps

import wplus
from wplus.assets.atomic import atomic_path
from wplus.errors import WPlusError
from wplus.faces.detect import prepare_reference, release_models
from wplus.geometry import WPLUS_SHAPE

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
WPLUS_SUFFIXES = (".pth", ".pt", ".safetensors", ".npy")
Encoder = Callable  # torch: (B,3,256,256) in [-1,1] -> (B,18,512); torch is imported lazily (light workers)


@dataclass
class Report:
    done: int = 0
    reused: int = 0
    skipped: list = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"prepared {self.done} new sample(s), {self.reused} already in the manifest, "
                 f"skipped {len(self.skipped)}"]
        lines += [f"  skipped {s['image']}: {s['reason']}" for s in self.skipped]
        return "\n".join(lines)


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_captions(image: Path) -> list[str]:
    txt = image.with_suffix(".txt")
    if not txt.is_file():
        return []
    return [line.strip() for line in txt.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]


def find_wplus(folder: Optional[Path], stem: str) -> Optional[Path]:
    if folder is None:
        return None
    return next((folder / (stem + s) for s in WPLUS_SUFFIXES if (folder / (stem + s)).is_file()), None)


def wild_face_mask(prepared, size: tuple[int, int]) -> Image.Image:
    """The aligned face mask mapped back into the (upright) photo: 255 = face."""
    m = np.asarray(prepared.matrix, dtype=np.float64)
    a, t = m[:2, :2], m[:2, 2]
    # PIL samples continuous coordinates; the matrix maps pixel indices (centres on integers).
    t = t - a @ np.array([0.5, 0.5]) + 0.5
    mask = Image.fromarray(np.uint8(np.clip(np.rint(prepared.mask * 255), 0, 255)), "L")
    return mask.transform(size, Image.AFFINE, (a[0, 0], a[0, 1], t[0], a[1, 0], a[1, 1], t[1]),
                          resample=Image.BILINEAR, fillcolor=0)


def _save_wplus(w, path: Path) -> None:
    from safetensors.torch import save_file  # torch: kept out of the detection workers (see Encoder)
    with atomic_path(path) as tmp:
        save_file({"wplus": w.detach().float().reshape(1, *WPLUS_SHAPE).contiguous().cpu()}, str(tmp))


def _load_manifest(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out[rec["id"]] = rec
    return out


def prepare(out: str | Path, faces: Optional[str | Path] = None, wild: Optional[str | Path] = None,
            encoder: Optional[Encoder] = None, wplus_dir: Optional[str | Path] = None,
            backend: str = "dlib", size: int = 512, require_single: bool = False,
            log: Callable[[str], None] = print, workers: int = 1) -> Report:
    """Process FACES (Stage I) and WILD (Stage II) folders into OUT; returns what was done/skipped.

    workers > 1 detects and aligns faces in that many processes (the encoder stays in this one).
    """
    from wplus.identity.encoder import image_to_batch  # torch: kept out of the detection workers

    out = Path(out)
    for sub in ("aligned", "masks", "wplus", "wild_masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.jsonl"
    known = _load_manifest(manifest_path)
    wplus_dir = Path(wplus_dir) if wplus_dir else None
    report = Report()
    jobs: list[tuple[str, Path]] = []
    for kind, folder in (("face", faces), ("wild", wild)):
        if folder is not None:
            if not Path(folder).is_dir():
                raise FileNotFoundError(f"{folder} is not a folder of images")
            jobs += [(kind, p) for p in list_images(Path(folder))]
    if not jobs:
        raise ValueError("nothing to prepare: give --faces and/or --wild folders with images")
    todo = []
    for kind, image in jobs:
        if f"{kind}-{image.stem}" in known:
            report.reused += 1
        else:
            todo.append((kind, image))
    detect = functools.partial(_detect, backend=backend, size=size, require_single=require_single)
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 and len(todo) > 1 else None
    results = pool.imap(detect, todo, chunksize=4) if pool else map(detect, todo)
    try:
        with open(manifest_path, "a") as manifest, open(out / "skipped.jsonl", "a") as skipped:
            for n, ((kind, image), (prep, error)) in enumerate(zip(todo, results), 1):
                sid = f"{kind}-{image.stem}"
                if error is None:
                    try:
                        rec = _finish(kind, image, sid, out, prep, encoder, find_wplus(wplus_dir, image.stem),
                                      image_to_batch)
                    except (WPlusError, OSError, ValueError) as exc:
                        error = f"{type(exc).__name__}: {exc}"
                if error is not None:
                    entry = {"image": str(image), "reason": error}
                    report.skipped.append(entry)
                    skipped.write(json.dumps(entry) + "\n")
                    log(f"[{n}/{len(todo)}] skip {image.name}: {error}")
                    continue
                manifest.write(json.dumps(rec) + "\n")
                manifest.flush()
                report.done += 1
                log(f"[{n}/{len(todo)}] {image.name} -> {sid}")
    finally:
        if pool is not None:
            pool.terminate()
    release_models()  # face networks were kept loaded across photos
    return report


def _detect(job: tuple[str, Path], backend: str, size: int, require_single: bool):
    """Detect + align + mask one photo (runs in worker processes): (PreparedFace, None) or (None, reason)."""
    try:
        return prepare_reference(str(job[1]), backend=backend, size=size, require_single=require_single,
                                 keep_models=True), None
    except (WPlusError, OSError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _finish(kind: str, image: Path, sid: str, out: Path, prep, encoder: Optional[Encoder],
            wfile: Optional[Path], image_to_batch) -> dict:
    """Encode (main process: one encoder) and write the files and record of one prepared face."""
    rel = lambda p: os.path.relpath(p, out)
    aligned, mask = out / "aligned" / f"{sid}.png", out / "masks" / f"{sid}.png"
    wpath = out / "wplus" / f"{sid}.safetensors"
    prep.aligned.save(aligned)
    Image.fromarray(np.uint8(np.clip(np.rint(prep.mask * 255), 0, 255)), "L").save(mask)
    if wfile is not None:
        from trainer.data import load_wplus  # torch: kept out of the detection workers
        w = load_wplus(wfile)
    elif encoder is not None:
        import torch  # kept out of the detection workers
        with torch.no_grad():
            w = encoder(image_to_batch(prep.masked, 256))
        if tuple(w.shape[-2:]) != WPLUS_SHAPE:
            raise ValueError(f"the encoder returned {tuple(w.shape)}, expected (1,{WPLUS_SHAPE[0]},{WPLUS_SHAPE[1]})")
    else:
        raise ValueError(f"no W+ for {image.name}: give --e4e (or --wplus-dir with {image.stem}.pth)")
    _save_wplus(w, wpath)
    rec = {"id": sid, "aligned": rel(aligned), "mask": rel(mask), "wplus": rel(wpath),
           "source": rel(image), "backend": prep.backend, "face_index": prep.face_index,
           "faces": len(prep.faces)}
    captions = read_captions(image)
    if captions:
        rec["captions"] = captions
    if kind == "wild":
        with Image.open(image) as im:
            wsize = im.size
            if _has_rotation(im):  # store the upright photo so that photo and mask share coordinates
                upright = ImageOps.exif_transpose(im).convert("RGB")
                wsize = upright.size
                upright_path = out / "wild_masks" / f"{sid}.upright.png"
                upright.save(upright_path)
                rec["source"] = rel(upright_path)
        wmask = out / "wild_masks" / f"{sid}.png"
        wild_face_mask(prep, wsize).save(wmask)
        rec["wild"], rec["wild_mask"] = rec["source"], rel(wmask)
    return rec


def _has_rotation(im: Image.Image) -> bool:
    try:
        return im.getexif().get(0x0112, 1) not in (1, None)
    except Exception:
        return False


def e4e_encoder(path: str, device: Optional[str] = None) -> Encoder:
    """The real e4e (loaded once, on the GPU when there is one)."""
    import torch  # kept out of the detection workers
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = wplus.load_e4e(path, device=device)
    return lambda batch: model.encode(batch).cpu()


def main(argv: Optional[Iterable[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python trainer/prepare.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--faces", help="folder of face photos (Stage I)")
    p.add_argument("--wild", help="folder of in-the-wild photos with name.txt captions (Stage II)")
    p.add_argument("--out", required=True, help="output folder (manifest.jsonl and the prepared files)")
    p.add_argument("--e4e", help="e4e checkpoint (e4e_ffhq_encode.pt or our .safetensors) to compute W+")
    p.add_argument("--wplus-dir", help="folder of precomputed W+ files named like the photos (N.pth)")
    p.add_argument("--backend", default="dlib", choices=["dlib", "facexlib", "auto"], help="face detector")
    p.add_argument("--size", type=int, default=512, help="aligned face size")
    p.add_argument("--require-single", action="store_true", help="skip photos with several faces "
                   "(default: use the largest face)")
    p.add_argument("--device", help="device for e4e (default: cuda if available)")
    p.add_argument("--workers", type=int, default=1, help="processes for face detection and alignment")
    args = p.parse_args(list(argv) if argv is not None else None)
    encoder = e4e_encoder(args.e4e, args.device) if args.e4e else None
    try:
        report = prepare(args.out, args.faces, args.wild, encoder, args.wplus_dir, args.backend, args.size,
                         args.require_single, workers=args.workers)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report)
    print(f"manifest: {Path(args.out) / 'manifest.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
