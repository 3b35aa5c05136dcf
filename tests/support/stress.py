"""Processes for the cross-process stress test (kept importable so the
spawned children do not depend on pytest)."""
from __future__ import annotations

import os
import random

import numpy as np

import ring
from ring import FrameType, WriteStatus
from ring.file import HEADER_SIZE

N_TEMPLATES = 64
MAX_LEN = 2048


def templates(seed: int) -> list[bytearray]:
    rng = random.Random(seed)
    return [bytearray(rng.randbytes(MAX_LEN)) for _ in range(N_TEMPLATES)]


def lengths(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(8, MAX_LEN + 1, size=4096, dtype=np.int64)


def produce(path: str, n: int, seed: int, conn) -> None:
    """Data frame k: 8-byte k, then template k % 64 up to lengths[k % 4096]."""
    tmpl = templates(seed)
    views = [memoryview(t) for t in tmpl]
    lens = lengths(seed).tolist()
    p = ring.Producer(path)
    write = p.write
    full = 0
    for k in range(n):
        t = k & (N_TEMPLATES - 1)
        tmpl[t][0:8] = k.to_bytes(8, "little")
        mv = views[t][: lens[k & 4095]]
        while write(mv) != WriteStatus.OK:  # a test producer may retry; the receiver drops
            full += 1
            os.sched_yield()
    p.close()
    conn.send({"full": full})


def consume(path: str, name: str, tethered: bool, n: int, seed: int, conn) -> None:
    tmpl = [bytes(t) for t in templates(seed)]
    lens = lengths(seed)
    rd = ring.Reader(path, name, tethered=tethered, verify_crc=True, spin_us=20)
    data = np.frombuffer(rd._mv, dtype=np.uint8)
    eight = np.arange(8)
    expect_k = 0 if tethered else None
    seen = 0
    errors: list[str] = []
    laps = 0
    segments = 0
    control = 0
    checked_bytes = 0
    while True:
        if not rd.available():
            if rd.producer_stopped() and not rd.available():
                break
            rd.wait(0.2)
            continue
        try:
            b = rd.read()
            if not len(b):
                continue
            typ = b.type
            is_data = typ == FrameType.DATA
            control += int((~is_data).sum())
            pos = b.pos[is_data]
            offs = (HEADER_SIZE + 32 + (pos & np.uint64(rd._mask))).astype(np.int64)
            ks = data[offs[:, None] + eight].copy().view("<u8").ravel().astype(np.int64)
            got_len = b.length[is_data].astype(np.int64)
            batch_errors = []
            if len(ks):
                if expect_k is None:
                    expect_k = int(ks[0])
                    segments += 1
                want = np.arange(expect_k, expect_k + len(ks))
                if not np.array_equal(ks, want):
                    bad = int(np.flatnonzero(ks != want)[0])
                    batch_errors.append(f"{name}: frame index {ks[bad]} where {want[bad]} expected")
                if not np.array_equal(got_len, lens[ks & 4095]):
                    batch_errors.append(f"{name}: wrong length near index {ks[0]}")
                # byte-for-byte on a deterministic sample
                idx = np.flatnonzero((ks % 61) == 0)
                for i in idx.tolist():
                    k = int(ks[i])
                    o = int(offs[i])
                    if not 0 <= k < n:
                        batch_errors.append(f"{name}: frame index {k} out of range")
                        continue
                    exp = k.to_bytes(8, "little") + tmpl[k & (N_TEMPLATES - 1)][8: int(lens[k & 4095])]
                    if data[o: o + len(exp)].tobytes() != exp:
                        batch_errors.append(f"{name}: content of frame {k} differs")
                    checked_bytes += len(exp)
            rd.check(b)  # untethered: only now are the checks above trustworthy
            errors.extend(batch_errors[:5])
            if len(ks):
                expect_k = int(ks[-1]) + 1
                seen += len(ks)
            rd.commit(b)
        except ring.Lapped:
            laps += 1
            rd.resume_oldest()
            expect_k = None
        if len(errors) > 20:
            break
    rd.close()
    conn.send({"seen": seen, "errors": errors, "laps": laps, "segments": segments,
               "control": control, "last": expect_k, "checked_bytes": checked_bytes})
