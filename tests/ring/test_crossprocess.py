"""Cross-process stress: one producer process, a tethered and an untethered
reader process, >= 10 million frames of random sizes with CRC checking on."""
import multiprocessing as mp
import os

import pytest

import ring
import stress
from timing import timeout

N_FRAMES = int(os.environ.get("CAPTURE_STRESS_FRAMES", 10_000_000))


@pytest.fixture
def ctx():
    return mp.get_context("fork")


def test_ten_million_frames_two_readers(ring_path, ctx):
    ring.create(ring_path, 4 << 20).close()
    seed = 12345
    pipes = {}
    procs = []
    # Readers register before the producer starts so they see frame 0.
    for name, tethered in (("flusher", True), ("publisher", False)):
        a, b = ctx.Pipe(duplex=False)
        pipes[name] = a
        ready = ring.Reader(ring_path, name, tethered=tethered)
        ready.close()
        procs.append(ctx.Process(target=stress.consume, args=(ring_path, name, tethered, N_FRAMES, seed, b)))
    a, b = ctx.Pipe(duplex=False)
    pipes["producer"] = a
    procs.append(ctx.Process(target=stress.produce, args=(ring_path, N_FRAMES, seed, b)))
    for p in procs:
        p.start()
    results = {}
    for name, pipe in pipes.items():
        assert pipe.poll(timeout(400)), f"{name} did not finish"
        results[name] = pipe.recv()
    for p in procs:
        p.join(timeout(30))
        assert p.exitcode == 0
    t, u = results["flusher"], results["publisher"]
    print(f"\nstress: {N_FRAMES} frames; producer retried {results['producer']['full']} full writes; "
          f"untethered lapped {u['laps']} times, saw {u['seen']} frames in {u['segments']} runs; "
          f"{t['checked_bytes']} bytes compared byte for byte by the tethered reader")
    assert t["errors"] == [] and u["errors"] == []
    assert t["seen"] == N_FRAMES and t["last"] == N_FRAMES
    # every refused write episode became a gap record
    assert (t["control"] > 0) == (results["producer"]["full"] > 0)
    assert 0 < u["seen"] <= N_FRAMES
    st = ring.stats(ring_path)
    assert st["next_seq"] == N_FRAMES + t["control"]
