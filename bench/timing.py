"""Timing for every bench: interleaved runs, min / median / spread, and a noise band in the verdict.

On a shared machine the load changes while a bench runs. Timing all of A, then all of B turns that
into a fake difference (a run once printed a *negative* branch overhead and called it OK). So:
- variants are run interleaved (A, B, A, B, …) after one warm-up each, so load changes hit both;
- each variant reports min (the least disturbed run), median and spread = (max − min) / median;
- the noise band of a comparison is the larger spread of the two; a difference inside it is
  reported as "within noise", a negative overhead beyond it as NOISE (never OK), and a target is
  only judged when the band is narrower than what is being measured.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Mapping


@dataclass(frozen=True)
class Stats:
    times: tuple[float, ...]

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def spread(self) -> float:
        """(max − min) / median: how much this machine's load moved the runs."""
        return (max(self.times) - min(self.times)) / self.median if self.median > 0 else 0.0

    def line(self, unit: float = 1.0, suffix: str = "s") -> str:
        return (f"min {self.min * unit:9.4f} {suffix}  median {self.median * unit:9.4f} {suffix}  "
                f"spread {self.spread * 100:5.1f} %  (n={len(self.times)})")


def clock(fn: Callable[[], object], sync: Callable[[], None] | None = None) -> float:
    if sync:
        sync()
    start = time.perf_counter()
    fn()
    if sync:
        sync()
    return time.perf_counter() - start


def interleaved(variants: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1,
                sync: Callable[[], None] | None = None) -> dict[str, Stats]:
    """Run each variant `warmup` times, then `repeats` rounds of one run of every variant in turn."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(clock(fn, sync))
    return {name: Stats(tuple(t)) for name, t in times.items()}


def repeated(fn: Callable[[], object], repeats: int, sync: Callable[[], None] | None = None,
             setup: Callable[[], object] | None = None) -> Stats:
    """One variant on its own (e.g. a first use that must be reset by `setup` before every run)."""
    out = []
    for _ in range(repeats):
        if setup:
            setup()
        out.append(clock(fn, sync))
    return Stats(tuple(out))


@dataclass(frozen=True)
class Comparison:
    base: Stats
    other: Stats

    @property
    def extra_min(self) -> float:
        return self.other.min / self.base.min - 1

    @property
    def extra_median(self) -> float:
        return self.other.median / self.base.median - 1

    @property
    def noise(self) -> float:
        return max(self.base.spread, self.other.spread)

    def verdict(self, floor: float | None = None, target: float | None = None) -> str:
        """floor: the extra share physics allows (e.g. extra FLOPs); target: allowed extra / floor."""
        extra, noise = self.extra_median, self.noise
        band = f"noise band ±{noise * 100:.1f} %"
        if extra < -noise:
            return (f"NOISE: negative overhead ({extra * 100:+.2f} %) outside the {band}; the machine's load "
                    "changed during the run — rerun on an idle machine")
        if floor is not None and target is not None:
            limit = target * floor
            if noise >= max(limit, 1e-9):
                return (f"INCONCLUSIVE: {band} is wider than the {limit * 100:.2f} % being judged "
                        f"(extra {extra * 100:+.2f} %); rerun with more repeats on an idle machine")
            ok = extra <= limit
            return (f"extra time / floor = {extra / floor:.2f} (target <= {target:g}, {band}): "
                    f"{'OK' if ok else 'ABOVE TARGET'}")
        if abs(extra) <= noise:
            return f"within noise ({extra * 100:+.2f} %, {band})"
        return f"{extra * 100:+.2f} % ({band})"
