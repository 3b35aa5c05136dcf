"""Flusher throughput vs a raw sequential write, and fsync latency per policy.

For each frame size (256 B, 2 KiB) a 4 MiB ring is filled with 3 MiB of
frames by a producer, then drained by the flusher (fsync=never, so the page
cache is the limit for both sides); the same number of bytes is written raw,
in 1 MiB ``os.write`` calls to a file in the same directory, in the same
run, interleaved.  The ratio flusher/raw is printed (target >= 0.9).  The
producer runs either in the flusher's own process (``same``: the backlog is
in the flusher's cache) or, as in production, in another process on another
core (``process``: the backlog was written by another core).  Then the drain
is repeated under each fsync policy and the fsync latency distribution
printed.

Run: ``make bench`` (or ``pytest bench/test_flusher_bench.py --benchmark-only -s``).
Numbers are printed, never asserted.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time

import numpy as np
import pytest

import ring
from flusher.segments.drain import Flusher, FlusherConfig
from flusher.segments.names import list_segments
from flusher_bench_helpers import Filler, fill

RING_BYTES = 4 << 20         # the default ring
FILL = 3 << 20               # bytes of frames per drain: a backlog that is still in cache,
                             # as when the flusher keeps up with a live feed


@pytest.fixture
def ring_path():
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    d = tempfile.mkdtemp(prefix="capture-bench-", dir=base)
    os.chmod(d, 0o700)
    p = os.path.join(d, "bench.ring")
    ring.create(p, capacity=RING_BYTES)
    yield p
    shutil.rmtree(d, ignore_errors=True)


def _drain(fl: Flusher) -> int:
    n = 0
    while True:
        k = fl.step()
        if not k:
            return n
        n += k


def _raw_write(fd: int, data: bytes, chunk: int = 1 << 20) -> None:
    """The baseline: the same bytes appended sequentially in 1 MiB writes."""
    mv = memoryview(data)
    for i in range(0, len(mv), chunk):
        os.write(fd, mv[i:i + chunk])


@pytest.mark.parametrize("producer", ["same", "process"])
@pytest.mark.parametrize("frame_bytes", [256, 2048])
def test_flusher_throughput_vs_raw(benchmark, ring_path, tmp_path, frame_bytes, producer):
    """One round: the producer puts FILL bytes of frames in the ring (untimed),
    the flusher drains them (timed).  Right before, the same number of bytes
    is written raw to a file in the same directory (timed apart), so both see
    the same page-cache conditions; the files are deleted every 16 rounds."""
    frame = (32 + frame_bytes + 7) & ~7
    count = FILL // frame
    nbytes = count * frame
    data = str(tmp_path / "data")
    os.mkdir(data)
    cfg = FlusherConfig(ring=ring_path, data_dir=data, venue="bench", shard=0, fsync="never",
                        segment_bytes=256 << 20, rotate_hourly=False)
    fl = Flusher(cfg)
    filler = Filler(producer, ring_path, frame_bytes, count)
    raw_path = str(tmp_path / "raw.bin")
    src = os.urandom(nbytes)
    raw_times: list[float] = []
    state = {"round": 0, "fd": -1}

    def setup():
        if state["round"] % 16 == 0:
            fl._close_segment()
            for p in list_segments(data):
                os.unlink(p)
            if state["fd"] >= 0:
                os.close(state["fd"])
            state["fd"] = os.open(raw_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        state["round"] += 1
        t0 = time.perf_counter()
        _raw_write(state["fd"], src)
        raw_times.append(time.perf_counter() - t0)
        filler.fill()
        return (), {}

    def drain():
        assert _drain(fl) == count

    benchmark.pedantic(drain, setup=setup, rounds=96, iterations=1, warmup_rounds=0)
    os.close(state["fd"])
    flusher_s = benchmark.stats.stats.median
    raw_s = float(np.median(raw_times))
    fl.close()
    filler.close()
    ratio = raw_s / flusher_s
    benchmark.extra_info.update({"frames_per_s": count / flusher_s, "MiB_per_s": nbytes / flusher_s / 2**20,
                                 "raw_MiB_per_s": nbytes / raw_s / 2**20, "ratio_vs_raw": ratio})
    print(f"\n[flusher {frame_bytes} B frames, producer {producer}, median of 96 drains of {nbytes >> 10} KiB] "
          f"{count / flusher_s:,.0f} frames/s, {nbytes / flusher_s / 2**20:,.0f} MiB/s; "
          f"raw sequential write {nbytes / raw_s / 2**20:,.0f} MiB/s; flusher/raw = {ratio:.2f}x")


@pytest.mark.parametrize("policy", ["never", "interval", "always"])
def test_fsync_latency_per_policy(benchmark, ring_path, tmp_path, policy):
    frame_bytes = 512
    payload = os.urandom(frame_bytes)
    data = str(tmp_path / "data")
    os.mkdir(data)
    cfg = FlusherConfig(ring=ring_path, data_dir=data, venue="bench", shard=0, fsync=policy,
                        fsync_interval=0.01, segment_bytes=256 << 20, rotate_hourly=False)
    fl = Flusher(cfg)
    prod = ring.Producer(ring_path)
    count = 20_000

    def run():
        # trickle: small batches, as a live feed produces them
        for _ in range(count // 200):
            fill(prod, payload, 200)
            _drain(fl)             # under interval, step() fsyncs once the interval is due

    benchmark.pedantic(run, rounds=3, iterations=1)
    lat = np.array(fl.fsync_recent, dtype=np.float64) / 1000.0
    fl.close()
    prod.close()
    if len(lat):
        p50, p90, p99 = np.percentile(lat, [50, 90, 99])
        line = (f"{len(lat)} fsyncs: p50 {p50:,.0f} us, p90 {p90:,.0f} us, p99 {p99:,.0f} us, "
                f"max {lat.max():,.0f} us")
        benchmark.extra_info.update({"fsyncs": len(lat), "p50_us": p50, "p99_us": p99, "max_us": lat.max()})
    else:
        line = "no fsyncs (the OS decides when data reaches the disk)"
    elapsed = benchmark.stats.stats.median
    print(f"\n[fsync={policy}] {count / elapsed:,.0f} frames/s of 512 B in 200-frame batches; {line}")
