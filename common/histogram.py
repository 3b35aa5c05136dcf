"""Latency histograms in log2 microsecond buckets, shared by the children
(which fill them and put them in their status files) and by /metrics and
the demo (which read them).

Bucket ``i`` counts values below ``2**i`` microseconds (bucket 0: below 1 us
or negative); the last bucket takes everything larger.  A list of plain ints
travels as JSON unchanged.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

BUCKETS = 32


def new() -> list[int]:
    return [0] * BUCKETS


def bucket(ns: int, n: int = BUCKETS) -> int:
    """The bucket of one value in nanoseconds."""
    return min(n - 1, max(1, ns // 1000).bit_length()) if ns > 0 else 0


def add(hist: list[int], ns: int) -> None:
    hist[bucket(ns, len(hist))] += 1


def add_many(hist: list[int], ns: "np.ndarray | Iterable[int]") -> None:
    """Add an array of nanosecond values (vectorised; same buckets as add)."""
    arr = np.asarray(ns, dtype=np.int64)
    if not arr.size:
        return
    us = np.maximum(arr // 1000, 1)
    idx = np.minimum(np.floor(np.log2(us)).astype(np.int64) + 1, len(hist) - 1)
    idx[arr <= 0] = 0
    counts = np.bincount(idx, minlength=len(hist))
    for i in np.flatnonzero(counts).tolist():
        hist[i] += int(counts[i])


def log2_buckets(hist: list[int]) -> list[tuple[str, float]]:
    """Counts per bucket i (< 2**i microseconds) -> cumulative Prometheus buckets."""
    out, total = [], 0
    for i, n in enumerate(hist[:-1]):
        total += n
        out.append((repr((2 ** i) / 1e6), float(total)))
    out.append(("+Inf", float(total + hist[-1])))
    return out


def log2_sum(hist: list[int]) -> float:
    """An estimate of the sum (bucket midpoints), for the _sum series."""
    return sum(n * 0.75 * (2 ** i) / 1e6 for i, n in enumerate(hist))


def log2_percentile(hist: list[int], q: float) -> float | None:
    """Upper bound (seconds) of the bucket holding the q-th quantile."""
    total = sum(hist)
    if not total:
        return None
    need, run = q * total, 0
    for i, n in enumerate(hist):
        run += n
        if run >= need:
            return (2 ** i) / 1e6
    return None
