"""Prepare training data: aligned faces, background masks, W+ codes, in-the-wild face masks, manifest.

    python trainer/prepare.py --faces FACES_DIR [--wild WILD_DIR] --out DATA_DIR --e4e e4e_ffhq_encode.pt

FACES_DIR: face photos for Stage I (any framing; each is detected and FFHQ-aligned).
WILD_DIR: Stage II photos with captions (`name.jpg` + `name.txt`, one caption per line); the face in
each is aligned and encoded (its W+ is the identity), and its mask is mapped back into the photo.
W+ codes come from e4e on the background-removed aligned face (as the paper), or from precomputed
files (`--wplus-dir`, e.g. the official `N.pth`). Writes DATA_DIR/manifest.jsonl (one JSON record
per sample, paths relative to it) and DATA_DIR/skipped.jsonl (this run's images without a usable
face, and why; rewritten by every run). Resumable: samples already in the manifest are not redone.
Exit status 2 (with one line saying why) when the inputs are wrong or no sample could be prepared.
"""
from __future__ import annotations

import argparse
import collections
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


# why a photo was skipped, by exception type (or NoWPlus), for the one-line summary; each photo's full
# reason is logged and written to skipped.jsonl
_CAUSES = {"FaceNotFoundError": "no usable face", "MultipleFacesError": "several faces (--require-single)",
           "ImageInputError": "not a readable image", "NoWPlus": "no W+ file in --wplus-dir"}


@dataclass
class Report:
    done: int = 0
    reused: int = 0
    skipped: list = field(default_factory=list)

    def causes(self) -> str:
        """'2 no usable face, 1 not a readable image': why photos were skipped, most common first."""
        counts = collections.Counter(s["cause"] for s in self.skipped)
        return ", ".join(f"{n} {cause}" for cause, n in counts.most_common())

    def __str__(self) -> str:
        text = f"prepared {self.done} new sample(s), {self.reused} already in the manifest, skipped {len(self.skipped)}"
        return text + (f" ({self.causes()})" if self.skipped else "")


def check_inputs(faces: Optional[str | Path], wild: Optional[str | Path],
                 wplus_dir: Optional[str | Path] = None) -> None:
    """The folders exist and hold images (checked before e4e is loaded, and before any photo is read)."""
    for flag, folder in (("--faces", faces), ("--wild", wild), ("--wplus-dir", wplus_dir)):
        if folder is not None and not Path(folder).is_dir():
            raise FileNotFoundError(f"{flag} {folder}: no such folder")
    folders = [Path(f) for f in (faces, wild) if f is not None]
    if not folders:
        raise ValueError("nothing to prepare: give --faces and/or --wild folders with images")
    if not any(list_images(f) for f in folders):
        raise ValueError(f"nothing to prepare: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in "
                         f"{' or '.join(str(f) for f in folders)}")


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

    check_inputs(faces, wild, wplus_dir)
    out = Path(out)
    known = _load_manifest(out / "manifest.jsonl")
    wplus_dir = Path(wplus_dir) if wplus_dir else None
    report = Report()
    todo = _todo(faces, wild, known, report)
    if todo and encoder is None and wplus_dir is None:
        raise ValueError("no W+ source: give --e4e e4e_ffhq_encode.pt (encodes each face) or --wplus-dir DIR "
                         "(precomputed W+ files named like the photos, e.g. 00017.pth)")
    for sub in ("aligned", "masks", "wplus", "wild_masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    detect = functools.partial(_detect, backend=backend, size=size, require_single=require_single,
                               wplus_dir=None if encoder is not None else wplus_dir)
    finish = functools.partial(_finish, out=out, encoder=encoder, wplus_dir=wplus_dir,
                               image_to_batch=image_to_batch)
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 and len(todo) > 1 else None
    results = pool.imap(detect, todo, chunksize=4) if pool else map(detect, todo)
    try:
        _write_samples(todo, results, out, finish, report, log)
    finally:
        if pool is not None:
            pool.terminate()
    release_models()  # face networks were kept loaded across photos
    return report


def _todo(faces: Optional[str | Path], wild: Optional[str | Path], known: dict[str, dict],
          report: Report) -> list[tuple[str, Path]]:
    """The (kind, photo) pairs still to prepare; those already in the manifest count as reused."""
    jobs: list[tuple[str, Path]] = []
    for kind, folder in (("face", faces), ("wild", wild)):
        if folder is not None:
            jobs += [(kind, p) for p in list_images(Path(folder))]
    todo = []
    for kind, image in jobs:
        if f"{kind}-{image.stem}" in known:
            report.reused += 1
        else:
            todo.append((kind, image))
    return todo


def _write_samples(todo: list[tuple[str, Path]], results: Iterable, out: Path, finish: Callable[..., dict],
                   report: Report, log: Callable[[str], None]) -> None:
    """Append each prepared photo's record to the manifest; each skipped one (and why) to skipped.jsonl."""
    with open(out / "manifest.jsonl", "a") as manifest, open(out / "skipped.jsonl", "w") as skipped:
        for n, ((kind, image), (prep, error)) in enumerate(zip(todo, results), 1):
            sid = f"{kind}-{image.stem}"
            if error is None:
                rec, error = _finish_safely(finish, kind, image, sid, prep)
            if error is not None:
                entry = _skip_entry(image, error)
                report.skipped.append(entry)
                skipped.write(json.dumps(entry) + "\n")
                log(f"[{n}/{len(todo)}] skip {image.name}: {entry['reason']}")
                continue
            manifest.write(json.dumps(rec) + "\n")
            manifest.flush()
            report.done += 1
            log(f"[{n}/{len(todo)}] {image.name} -> {sid}")


def _finish_safely(finish: Callable[..., dict], kind: str, image: Path, sid: str,
                   prep) -> tuple[Optional[dict], Optional[tuple[str, str]]]:
    """(record, None), or (None, (error type, message)) when the photo cannot be finished."""
    try:
        return finish(kind, image, sid, prep=prep), None
    except (WPlusError, OSError, ValueError) as exc:
        return None, (type(exc).__name__, str(exc))


def _skip_entry(image: Path, error: tuple[str, str]) -> dict:
    """The skipped.jsonl record of a photo: its reason and the cause the report counts."""
    return {"image": str(image), "reason": f"{error[0]}: {error[1]}", "cause": _CAUSES.get(error[0], error[0])}


def _detect(job: tuple[str, Path], backend: str, size: int, require_single: bool, wplus_dir: Optional[Path]):
    """Detect + align + mask one photo (runs in worker processes): (PreparedFace, None) or
    (None, (error type, message)). With `wplus_dir` (and no encoder) a photo without its W+ file
    is skipped before any detection."""
    image = job[1]
    if wplus_dir is not None and find_wplus(wplus_dir, image.stem) is None:
        return None, ("NoWPlus", f"no W+ file for {image.name} in {wplus_dir} ({image.stem}.pth, .pt, "
                                 ".safetensors or .npy) and no --e4e to compute it")
    try:
        return prepare_reference(str(job[1]), backend=backend, size=size, require_single=require_single,
                                 keep_models=True), None
    except (WPlusError, OSError, ValueError) as exc:
        return None, (type(exc).__name__, str(exc))


def _finish(kind: str, image: Path, sid: str, out: Path, prep, encoder: Optional[Encoder],
            wplus_dir: Optional[Path], image_to_batch) -> dict:
    """Encode (main process: one encoder) and write the files and record of one prepared face."""
    rel = lambda p: os.path.relpath(p, out)
    aligned, mask = out / "aligned" / f"{sid}.png", out / "masks" / f"{sid}.png"
    wpath = out / "wplus" / f"{sid}.safetensors"
    wfile = find_wplus(wplus_dir, image.stem)  # none without an encoder was skipped in _detect
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
    try:
        check_inputs(args.faces, args.wild, args.wplus_dir)  # before the 1 GB e4e is loaded
        encoder = e4e_encoder(args.e4e, args.device) if args.e4e else None
        report = prepare(args.out, args.faces, args.wild, encoder, args.wplus_dir, args.backend, args.size,
                         args.require_single, workers=args.workers)
    except (OSError, ValueError, WPlusError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report)
    out = Path(args.out)
    if report.done == 0 and report.reused == 0:
        print(f"error: no sample was prepared: all {len(report.skipped)} photo(s) were skipped "
              f"({report.causes()}); each one's reason is in {out / 'skipped.jsonl'}", file=sys.stderr)
        return 2
    skipped = f"; skipped photos: {out / 'skipped.jsonl'}" if report.skipped else ""
    print(f"manifest: {out / 'manifest.jsonl'}{skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
