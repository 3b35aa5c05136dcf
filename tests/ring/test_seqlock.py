"""Bounded waits on the (head, next_seq) seqlock, and its repair.

A producer stopped or killed between the odd and the even store of the
generation must not wedge the readers of head (stats, lag, drained, reader
claims): they give up after a bound with RingDamaged.  The next producer
repairs the generation from a consistent pair; no sequence is reused.
"""
import os
import signal
import struct
import subprocess

import orjson
import pytest

import ring
from common.errors import RingDamaged
from ring import FrameType
from seqlock_harness import GEN_OFF, pair_gen, pair_kill, proc_state  # noqa: F401 - pair_kill: fixture
from timing import wait_for

CAP = 1 << 16





def test_odd_generation_is_reported_not_waited_on(ring_path):
    ring.create(ring_path, CAP).close()
    with ring.Producer(ring_path) as p:
        p.write(b"one")
    with open(ring_path, "r+b") as f:  # as if a writer stopped mid-update
        f.seek(GEN_OFF)
        f.write(struct.pack("<I", pair_gen(ring_path) | 1))
    with pytest.raises(RingDamaged, match="head seqlock"):
        ring.stats(ring_path)
    with pytest.raises(RingDamaged):
        ring.Reader(ring_path, "late", tethered=True)
    p = ring.Producer(ring_path)   # repairs it
    assert pair_gen(ring_path) % 2 == 0
    assert ring.stats(ring_path)["next_seq"] >= 2
    p.close()


def test_producer_killed_inside_the_seqlock_window(ring_path, pair_kill):
    ring.create(ring_path, CAP).close()
    rd = ring.Reader(ring_path, "flusher", tethered=True)
    proc = subprocess.Popen([pair_kill, ring_path, "5"])
    try:
        wait_for(lambda: proc_state(proc.pid) == "T", what="harness stopped inside the seqlock window")
        assert pair_gen(ring_path) % 2 == 1
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    # Every reader of head, in any process, gets a typed error, not a hang.
    with pytest.raises(RingDamaged):
        ring.stats(ring_path)
    with pytest.raises(RingDamaged):
        rd.lag()
    with pytest.raises(RingDamaged):
        rd.drained()
    with pytest.raises(RingDamaged):
        ring.Reader(ring_path, "publisher", tethered=False)
    # The next producer repairs the pair and records what happened.
    p = ring.Producer(ring_path)
    assert pair_gen(ring_path) % 2 == 0
    p.write(b"after repair")
    frames = []
    while True:
        b = rd.read()
        if not len(b):
            break
        frames += [(f.seq, f.type, bytes(f.payload)) for f in b]
        rd.commit(b)
    seqs = [s for s, _, _ in frames]
    assert seqs == list(range(len(frames))), "no sequence reused or skipped"
    payloads = [pl for _, t, pl in frames if t == FrameType.DATA]
    # The frame committed before the kill is kept (adopted), once.
    assert payloads == [b"frame %d" % i for i in range(5)] + [b"in the window", b"after repair"]
    kinds = [orjson.loads(pl)["kind"] for _, t, pl in frames if t == FrameType.CONTROL]
    assert kinds == ["ring_repaired", "producer_restart", "gap"]
    assert rd.drained() and rd.lag() == 0
    st = ring.stats(ring_path)
    assert st["next_seq"] == len(frames)
    p.close()
    rd.close()
