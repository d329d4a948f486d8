"""Photo -> identity: a full encode (detect + align + mask + e4e) against a cache hit.

    python bench/bench_identity.py [--photo PATH] [--e4e PATH] [--repeat 3] [--device cpu|cuda|all]

Uses the real e4e architecture: the checkpoint in models/ when present, else the same modules with
random weights (timing does not depend on the weights). Prints one table; ratios come from the
same run. All steps are run interleaved (see bench/timing.py): min, median and spread per step.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import timing  # noqa: E402  (bench/timing.py)

from wplus.assets import registry  # noqa: E402
from wplus.identity.cache import IdentityCache  # noqa: E402
from wplus.identity.encoder import IdentityEncoder  # noqa: E402


def random_e4e(device: str):
    """The full-size e4e + StyleGAN2 with the modules' own random init, via the real loader."""
    from wplus.stylegan import encoder as e4e_encoder
    from wplus.stylegan import generator as stylegan2
    from wplus.stylegan.e4e import load_e4e

    torch.manual_seed(0)
    sd = {f"encoder.{k}": v for k, v in e4e_encoder.Encoder4Editing().state_dict().items()}
    sd.update({f"decoder.{k}": v for k, v in stylegan2.Generator().state_dict().items()})
    return load_e4e({"state_dict": sd, "latent_avg": torch.zeros(18, 512)}, device=device)


def bench_device(device: str, photo, e4e_path: Path | None, repeat: int) -> dict[str, timing.Stats]:
    from wplus.faces.detect import prepare_reference
    from wplus.identity.encoder import image_to_batch
    from wplus.stylegan.e4e import load_e4e

    def open_e4e():
        return load_e4e(str(e4e_path), device=device) if e4e_path else random_e4e(device)

    model = open_e4e()
    model.load()
    ref = prepare_reference(photo, backend="dlib", size=256)  # also warms the dlib models
    batch = image_to_batch(ref.masked)
    sync = torch.cuda.synchronize if device == "cuda" else None
    with tempfile.TemporaryDirectory() as tmp:
        tags = iter(range(10**6))

        def first_use():  # what a new process pays: open + build e4e, then the full encode
            fresh = open_e4e()
            IdentityEncoder(lambda: fresh, cache=IdentityCache(8, Path(tmp) / f"c{next(tags)}")).encode(photo)

        def miss():
            enc = IdentityEncoder(lambda: model, cache=IdentityCache(8, Path(tmp) / f"c{next(tags)}"), keep_loaded=True)
            enc.encode(photo)

        cache = IdentityCache(8, Path(tmp) / "hit")
        enc = IdentityEncoder(lambda: model, cache=cache, keep_loaded=True)
        enc.encode(photo)

        def disk_hit():
            IdentityEncoder(lambda: model, cache=IdentityCache(8, Path(tmp) / "hit"), keep_loaded=True).encode(photo)

        variants = {
            "first use (load e4e + encode)": first_use,
            "full encode (cache miss)": miss,
            "e4e.encode only": lambda: model.encode(batch),
            "detect + align + mask only": lambda: prepare_reference(photo, backend="dlib", size=256),
            "cache hit, memory": lambda: enc.encode(photo),
            "cache hit, disk (fresh process)": disk_hit,
        }
        stats = timing.interleaved(variants, repeat, sync=sync)
        assert enc.encode_count == 1
    model.release()
    return stats


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photo", default=None, help="default: skimage.data.astronaut()")
    p.add_argument("--e4e", type=Path, default=None,
                   help="default: models/e4e_ffhq_encode.pt if present, else random weights")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="all", choices=("cpu", "cuda", "all"))
    args = p.parse_args(argv)
    if args.photo is None:
        import skimage.data
        from PIL import Image

        photo = Image.fromarray(skimage.data.astronaut())
    else:
        photo = args.photo
    e4e_path = args.e4e
    default = registry.get("e4e").path(registry.default_models_dir())
    if e4e_path is None and default.is_file():
        e4e_path = default
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    print(f"e4e weights: {e4e_path or 'random (real architecture)'}; photo: {args.photo or 'skimage astronaut'}; "
          f"torch threads {torch.get_num_threads()}")
    print(f"interleaved, {args.repeat} rounds; ratio = median of the cache miss / median of the row")
    for device in devices:
        stats = bench_device(device, photo, e4e_path, args.repeat)
        miss = stats["full encode (cache miss)"]
        for name, st in stats.items():
            ratio = f"{miss.median / st.median:,.0f}x faster than a miss" if name.startswith("cache hit") else ""
            print(f"{device:6s} {name:34s} {st.line()}  {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
