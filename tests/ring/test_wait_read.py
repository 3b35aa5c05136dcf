"""read(timeout): wait and read in one C call (the low-latency path)."""
import threading
import time

import pytest
from timing import timeout

import ring
from ring import WriteStatus
from ring._ringlib import lib
from common.errors import Lapped

CAP = 1 << 16


def make(path):
    ring.create(path, CAP).close()
    return path


def test_returns_what_read_returns(ring_path):
    make(ring_path)
    with ring.Reader(ring_path, "a", tethered=True) as rd, ring.Producer(ring_path) as p:
        for i in range(10):
            p.write(b"m%d" % i)
        b = rd.read(timeout(5))
        assert [(f.seq, bytes(f.payload)) for f in b] == [(i, b"m%d" % i) for i in range(10)]
        assert (b.start_seq, b.end_seq) == (0, 10)
        rd.commit(b)
        assert rd.info().seq == 10


def test_timeout_gives_an_empty_batch_and_a_heartbeat(ring_path):
    make(ring_path)
    with ring.Reader(ring_path, "a", tethered=True) as rd, ring.Producer(ring_path) as p:
        hb0 = rd.info().heartbeat_ns
        b = rd.read(0.01)
        assert len(b) == 0 and b.end_seq == b.start_seq == rd.next_seq
        assert rd.info().heartbeat_ns > hb0
        p.write(b"late")  # the cursor did not move: the next frame is still the first one
        assert [bytes(f.payload) for f in rd.read(timeout(5))] == [b"late"]


def test_sleeping_reader_is_woken_by_the_next_frame(ring_path):
    make(ring_path)
    with ring.Reader(ring_path, "s", tethered=True, spin_us=0) as rd, ring.Producer(ring_path) as p:
        rf = ring.attach(ring_path)

        def write_once_asleep():
            deadline = time.monotonic() + timeout(30)
            while not lib.ring_waiters(rf.base):  # the reader announced its sleep
                if time.monotonic() > deadline:
                    return
                time.sleep(0)
            p.write(b"wake")

        t = threading.Thread(target=write_once_asleep)
        t.start()
        b = rd.read(timeout(30))
        t.join()
        rf.close()
        assert [bytes(f.payload) for f in b] == [b"wake"]
        assert ring.stats(ring_path)["wakes"] >= 1


def test_untethered_lapped_raises_and_resumes(ring_path):
    make(ring_path)
    with ring.Reader(ring_path, "pub", tethered=False) as rd, ring.Producer(ring_path) as p:
        for _ in range(1000):
            assert p.write(b"z" * 500) == WriteStatus.OK
        with pytest.raises(Lapped) as ei:
            rd.read(timeout(5))
        assert ei.value.sequence == 0
        assert rd.next_seq == 0  # the cursor stays at the lap point
        _, seq = rd.resume_oldest()
        b = rd.read(timeout(5))
        assert int(b.seq[0]) == seq == ei.value.resume_sequence


def test_wait_reports_a_lap_instead_of_sleeping_through_it(ring_path):
    make(ring_path)
    with ring.Reader(ring_path, "pub", tethered=False, spin_us=0) as rd, ring.Producer(ring_path) as p:
        for _ in range(1000):
            p.write(b"z" * 500)
        assert rd.wait(timeout(30)) is True  # news, not a reason to sleep
        with pytest.raises(Lapped):
            rd.read()
