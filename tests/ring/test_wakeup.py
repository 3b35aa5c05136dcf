"""Wake-ups: a reader asleep on the futex is always woken by the next frame.

Each cycle waits until the reader has announced its sleep (its bit in the
ring's waiter mask), then writes one frame.  A lost wake-up would show as a
frame seen only when the reader's wait times out, so the worst latency is
compared with the wait timeout and reported."""
import multiprocessing as mp
import threading
import time

import numpy as np

import ring
from ring._ringlib import lib
from timing import timeout

CYCLES = 10_000
WAIT_TIMEOUT = 2.0


def _reader(path, n, conn):
    rd = ring.Reader(path, "sleeper", tethered=True, spin_us=0)
    lat = []
    while len(lat) < n:
        if not rd.wait(WAIT_TIMEOUT):
            continue
        now = time.time_ns()
        b = rd.read()
        lat.extend((now - b.ts).tolist())
        rd.commit(b)
    conn.send(lat)


def test_no_lost_wakeups(ring_path):
    ring.create(ring_path, 1 << 20).close()
    ring.Reader(ring_path, "sleeper", tethered=True).close()
    ctx = mp.get_context("fork")
    a, b = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_reader, args=(ring_path, CYCLES, b))
    proc.start()
    p = ring.Producer(ring_path)
    rf = ring.attach(ring_path)
    deadline = time.monotonic() + timeout(300)
    slept = 0
    for i in range(CYCLES):
        while not lib.ring_waiters(rf.base):  # the reader is (about to be) asleep
            assert time.monotonic() < deadline, "reader never went to sleep"
            time.sleep(0)
        slept += 1
        p.write(b"tick")
    assert a.poll(timeout(60))
    lat = np.array(a.recv()) / 1e3
    proc.join()
    wakes = ring.stats(ring_path)["wakes"]
    p.close()
    rf.close()
    print(f"\nwake-up latency over {CYCLES} futex sleeps: p50 {np.percentile(lat, 50):.1f} us, "
          f"p99 {np.percentile(lat, 99):.1f} us, max {lat.max():.1f} us; {wakes} futex wakes")
    assert len(lat) == CYCLES
    assert wakes >= CYCLES * 0.9  # nearly every frame went through FUTEX_WAKE
    assert lat.max() < WAIT_TIMEOUT * 1e6 * 0.5, "a frame waited for a timeout: lost wake-up"


def test_linger_bounds_the_wakes_of_a_batch_reader(ring_path):
    """A reader with ``linger_us`` wakes at most about once per linger while
    frames arrive faster than that, and reads what arrived meanwhile as one
    batch; without it, this feed costs a wake per frame.  The producer is
    paced (one frame per ms for 300 ms) only to feed slower than a reader
    drains; the bound checked is on the ring's own wake counter."""
    ring.create(ring_path, 1 << 20).close()
    frames, linger_s = 300, 0.03
    rd = ring.Reader(ring_path, "batcher", tethered=True, spin_us=0, linger_us=linger_s * 1e6)
    got, reads = [], 0
    done = threading.Event()

    def drain():
        nonlocal reads
        while len(got) < frames:
            if rd.wait(WAIT_TIMEOUT):
                b = rd.read()
                got.extend(b.seq.tolist())
                reads += 1
                rd.commit(b)
        done.set()

    t = threading.Thread(target=drain)
    p = ring.Producer(ring_path)
    w0 = ring.stats(ring_path)["wakes"]
    t.start()
    t0 = time.monotonic()
    for i in range(frames):
        p.write(b"x")
        time.sleep(0.001)
    span = time.monotonic() - t0
    assert done.wait(timeout(10))
    t.join()
    wakes = ring.stats(ring_path)["wakes"] - w0
    p.close()
    rd.close()
    assert got == sorted(got) and len(got) == frames
    # one wake per linger at most, plus the first and a little slack
    bound = span / linger_s + 3
    assert wakes <= bound, (wakes, bound)
    assert reads <= bound, (reads, bound)
