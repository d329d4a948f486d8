"""e4e + StyleGAN2 timings: opening/building the modules on demand, encode, render, seed -> W+, and
(when `wplus.identity` is importable) an identity-cache hit, all in one run so ratios are comparable.

    python bench/bench_e4e.py [--e4e PATH] [--repeat 3] [--device cpu|cuda|all] [--no-files] [--no-render]

Weights: the given checkpoint, else the full-size architecture with random weights (timings do not
depend on the values). Unless --no-files, the random checkpoint is also written once as the
official .pt layout and as our .safetensors (about 1 GB each, in a temporary folder) to time
`load_e4e` and the lazy module builds from each format. Add rows with `Bench.row`.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import timing  # noqa: E402  (bench/timing.py)

from wplus.stylegan import encoder as e4e_encoder  # noqa: E402
from wplus.stylegan import generator as stylegan2  # noqa: E402
from wplus.stylegan.e4e import E4E, load_e4e, save_e4e_safetensors  # noqa: E402


def random_checkpoint() -> dict:
    """The official layout with the modules' own random init (full size)."""
    torch.manual_seed(0)
    sd = {f"encoder.{k}": v for k, v in e4e_encoder.Encoder4Editing().state_dict().items()}
    sd.update({f"decoder.{k}": v for k, v in stylegan2.Generator().state_dict().items()})
    return {"state_dict": sd, "latent_avg": torch.zeros(18, 512), "opts": {"encoder_type": "Encoder4Editing"}}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Bench:
    """Collects (device, step, median seconds, images per call) rows and prints one table."""

    def __init__(self, repeat: int):
        self.repeat = repeat
        self.rows: List[Tuple[str, str, float, int]] = []
        self.stats: List[timing.Stats] = []

    def time(self, device: str, fn: Callable[[], object], repeat: Optional[int] = None) -> float:
        """Median seconds; min and spread go into the table too (see bench/timing.py)."""
        stats = timing.repeated(fn, repeat or self.repeat, sync=lambda: _sync(device))
        self.stats.append(stats)
        return stats.median

    def row(self, device: str, step: str, fn: Callable[[], object], images: int = 1,
            repeat: Optional[int] = None) -> float:
        secs = self.time(device, fn, repeat)
        self.rows.append((device, step, secs, images))
        print(f"  {device:5s} {step:44s} {secs:9.4f} s", file=sys.stderr, flush=True)
        return secs

    def print(self, reference: str = "encode, batch 1") -> None:
        ref = {d: s / n for d, step, s, n in self.rows if step == reference}
        print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
              + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
        print(f"{'device':6s} {'step':44s} {'median s':>10s} {'s / image':>10s} {'vs ' + reference:>22s} "
              f"{'min s':>9s} {'spread':>7s}")
        for (device, step, secs, n), st in zip(self.rows, self.stats):
            each, ratio = secs / n, ""
            if device in ref and step != reference:
                ratio = (f"{ref[device] / each:,.1f}x faster" if each <= ref[device]
                         else f"{each / ref[device]:,.1f}x slower")
            per = f"{each:10.4f}" if n > 1 else ""
            print(f"{device:6s} {step:44s} {secs:10.4f} {per:>10s} {ratio:>22s} {st.min:9.4f} "
                  f"{st.spread * 100:6.1f}%")
        print("A ratio whose rows' spread is larger than the ratio's difference from 1 is noise.")


def bench_files(b: Bench, ckpt: dict, folder: Path, device: str) -> None:
    pt, st = folder / "e4e.pt", folder / "e4e.safetensors"
    if not pt.exists():
        torch.save(ckpt, pt)
        save_e4e_safetensors(ckpt, st)
    for label, path in ((".pt (mmap)", pt), (".safetensors", st)):
        b.row(device, f"load_e4e {label}: validate only", lambda: load_e4e(path, device=device))
        model = load_e4e(path, device=device)

        def build(part: str) -> None:
            model.release()
            getattr(model, part)

        b.row(device, f"build encoder from {label}", lambda: build("encoder"), repeat=2)
        b.row(device, f"build generator from {label}", lambda: build("generator"), repeat=2)
        model.release()


def bench_model(b: Bench, model: E4E, device: str, render: bool) -> None:
    model.load()
    g = torch.Generator().manual_seed(0)
    batch1 = (torch.rand(1, 3, 256, 256, generator=g) * 2 - 1).to(device)
    batch4 = (torch.rand(4, 3, 256, 256, generator=g) * 2 - 1).to(device)
    with torch.no_grad():
        model.encode(batch1)  # warm-up (allocator, cudnn)
        b.row(device, "encode, batch 1", lambda: model.encode(batch1))
        b.row(device, "encode, batch 4", lambda: model.encode(batch4), images=4)
        b.row(device, "map_seed (mapping network)", lambda: model.map_seed(1))
        w = model.encode(batch1)
        if render:
            if device.startswith("cuda"):
                model.render(w)
            b.row(device, "render 1024px, batch 1", lambda: model.render(w),
                  repeat=1 if device == "cpu" else None)
        bench_cache(b, w[0].cpu(), device)


def bench_cache(b: Bench, code: torch.Tensor, device: str) -> None:
    """Cache hits of the identity engineer's content-hash cache, when it exists."""
    try:
        from wplus.identity.cache import IdentityCache
        from wplus.identity.files import Identity
    except ImportError:
        return
    with tempfile.TemporaryDirectory() as tmp:
        cache = IdentityCache(8, Path(tmp))
        cache.put("k", Identity(wplus=code))
        b.row(device, "identity cache hit, memory", lambda: cache.get("k"))
        b.row(device, "identity cache hit, disk", lambda: IdentityCache(8, Path(tmp)).get("k"))


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--e4e", type=Path, default=None, help="checkpoint (.pt or .safetensors); default random")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="all", choices=("cpu", "cuda", "all"))
    p.add_argument("--no-files", action="store_true", help="skip the 2 GB of load/build timings")
    p.add_argument("--no-render", action="store_true")
    args = p.parse_args(argv)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    b = Bench(args.repeat)
    ckpt = None if args.e4e else random_checkpoint()
    print(f"e4e weights: {args.e4e or 'random (real architecture)'}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            if ckpt is not None and not args.no_files:
                bench_files(b, ckpt, Path(tmp), device)
            model = load_e4e(args.e4e if args.e4e else ckpt, device=device)
            bench_model(b, model, device, render=not args.no_render)
            model.release()
    b.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
