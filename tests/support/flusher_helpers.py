"""Helpers for the flusher tests: deterministic payloads, a producer process,
segment building from plain frames, and reading what landed on disk.

Also a script: ``python flusher_helpers.py produce RING COUNT SEED [--big]``
writes payload(0..COUNT-1) in order, retrying each on FULL, then closes.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BASE_NS = 1_800_000_000 * 1_000_000_000      # 2027-01-15T08:00:00Z


def payload(i: int, seed: int = 0, big: bool = False) -> bytes:
    """Frame i of a run: mostly small, some KiB-sized, optionally some fragmented."""
    rng = random.Random(seed * 1_000_003 + i)
    if big and i % 1500 == 777:
        n = rng.randrange(150_000, 300_000)
    elif i % 97 == 5:
        n = rng.randrange(2000, 6000)
    else:
        n = rng.randrange(20, 400)
    head = b'{"i":%d,"s":%d}' % (i, seed)
    return head + rng.randbytes(max(0, n - len(head)))


def frames_of(payloads, first_seq: int = 0, ts0: int = BASE_NS, step_ns: int = 1000,
              type: int = 1) -> list[bytes]:
    from ring.frame import encode
    return [encode(p, first_seq + k, ts0 + k * step_ns, type) for k, p in enumerate(payloads)]


def write_segment(root: str, frames: list[bytes], *, venue: str = "test", shard: int = 0,
                  ring_id: bytes = b"R" * 16, created_ns: int = BASE_NS, close: bool = True,
                  index_every: int = 8):
    """A segment holding these encoded frames; returns (path, writer)."""
    from flusher.segments.writer import SegmentWriter, writer_header
    from ring.frame import decode_header
    seqs, tss, offs = [], [], []
    off = 0
    for f in frames:
        h = decode_header(f)
        seqs.append(h.seq)
        tss.append(h.ts_ns)
        offs.append(off)
        off += len(f)
    first = seqs[0] if seqs else 0
    w = SegmentWriter(root, writer_header(venue, shard, ring_id, created_ns, first, "testhost"),
                      index_every=index_every)
    if frames:
        w.append([b"".join(frames)], off, np.array(seqs, np.uint64), np.array(tss, np.int64),
                 np.array(offs, np.int64))
    if close:
        return w.close(), w
    w.abandon()
    return w.path, w


def start_producer(ring_path: str, count: int, seed: int, big: bool = False,
                   rate_pause_every: int = 0) -> subprocess.Popen:
    args = [sys.executable, os.path.join(HERE, "flusher_helpers.py"), "produce", ring_path,
            str(count), str(seed)]
    if big:
        args.append("--big")
    if rate_pause_every:
        args += ["--pause-every", str(rate_pause_every)]
    return subprocess.Popen(args)


def start_flusher(ring_path: str, data_dir: str, *extra: str, venue: str = "test",
                  shard: int = 0) -> subprocess.Popen:
    args = [sys.executable, "-m", "flusher.segments.drain", "--ring", ring_path, "--data-dir", data_dir,
            "--venue", venue, "--shard", str(shard), *extra]
    return subprocess.Popen(args, stderr=subprocess.PIPE, text=True)


def data_payloads_on_disk(data_dir: str) -> list[bytes]:
    """Every DATA message on disk (fragments reassembled), in sequence order."""
    from flusher.segments.read import read
    return [f.payload for f in read(data_dir) if f.type == 1]


def records_on_disk(data_dir: str) -> np.ndarray:
    from flusher.segments.read import metadata
    return metadata(data_dir).frames


def assert_exactly_once(data_dir: str, count: int, seed: int, big: bool = False) -> None:
    """Every payload 0..count-1 on disk once, in order; sequences without holes or repeats."""
    seqs = records_on_disk(data_dir)["seq"].astype(np.int64)
    assert len(seqs), "nothing on disk"
    d = np.diff(seqs)
    assert (d == 1).all(), f"sequence not continuous: repeats/holes at {np.flatnonzero(d != 1)[:10]}"
    got = data_payloads_on_disk(data_dir)
    want_ids = [int(p.split(b",")[0][5:]) for p in got]
    assert want_ids == list(range(count)), (
        f"{len(got)} data frames on disk for {count} written; first mismatch at "
        f"{next((k for k, v in enumerate(want_ids) if v != k), None)}")
    for i, p in enumerate(got):
        assert p == payload(i, seed, big), f"payload {i} differs"


def _produce(argv: list[str]) -> int:
    import ring
    ring_path, count, seed = argv[0], int(argv[1]), int(argv[2])
    big = "--big" in argv
    pause_every = int(argv[argv.index("--pause-every") + 1]) if "--pause-every" in argv else 0
    p = ring.Producer(ring_path, frag_timeout=5.0)
    try:
        for i in range(count):
            data = payload(i, seed, big)
            while p.write(data) != ring.WriteStatus.OK:
                time.sleep(0.0005)       # the ring is full: the flusher is behind
            if pause_every and i % pause_every == pause_every - 1:
                time.sleep(0.001)
    finally:
        p.close()
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "produce":
        sys.exit(_produce(sys.argv[2:]))
    sys.exit(2)
