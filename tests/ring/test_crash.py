"""Crashes: kill -9 of the producer mid-write and of a reader mid-batch."""
import os
import signal
import struct

import orjson
import pytest

import ring
from ring import FrameType
from timing import wait_for


def _state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _fork(fn):
    pid = os.fork()
    if pid == 0:
        try:
            fn()
        finally:
            os._exit(0)
    return pid


def test_producer_killed_between_copy_and_publish(ring_path):
    ring.create(ring_path, 1 << 16).close()
    rd = ring.Reader(ring_path, "flusher", tethered=True, verify_crc=True)

    def child():
        p = ring.Producer(ring_path)
        for i in range(10):
            p.write(b"frame %d" % i)
        p._test_pause_before_commit()
        p.write(b"PARTIAL" * 100)  # stops itself before the commit store
        p.write(b"never")

    pid = _fork(child)
    wait_for(lambda: _state(pid) == "T", what="producer paused before the commit store")
    # The payload bytes are in the ring, unpublished: readers must not see them.
    got = [bytes(f.payload) for f in rd.read()]
    assert got == [b"frame %d" % i for i in range(10)]
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert not rd.available()
    with open(ring_path, "rb") as f:  # the partial payload really is in the ring
        assert b"PARTIAL" * 10 in f.read()
    p = ring.Producer(ring_path)
    assert p.epoch == 2
    p.write(b"after restart")
    b = rd.read()
    frames = [(f.seq, f.type, bytes(f.payload)) for f in b]
    assert [s for s, _, _ in frames] == [10, 11, 12], "continues with the next sequence"
    assert frames[0][1] == FrameType.CONTROL and b"producer_restart" in frames[0][2]
    gap = orjson.loads(frames[1][2])  # the dead producer's loss is recorded
    assert gap["kind"] == "gap" and gap["reason"] == "producer_died" and gap["prev_pid"] == pid
    assert frames[2][2] == b"after restart"
    assert all(b"PARTIAL" not in f[2] for f in frames)
    p.close()
    rd.close()


def test_producer_killed_after_commit_before_head_is_repaired(ring_path):
    """A frame committed but not accounted for (head/next_seq not yet
    published) is adopted by the next producer, never overwritten.  Readers
    walk only up to the published head, so they get it once it is adopted."""
    ring.create(ring_path, 1 << 16).close()
    rd = ring.Reader(ring_path, "flusher", tethered=True)
    p = ring.Producer(ring_path)
    p.write(b"one")
    with open(ring_path, "rb") as f:
        f.seek(128)
        head1, seq1 = struct.unpack("<QQ", f.read(16))
    p.write(b"two")
    p._rf.close()  # simulate death: drop the lock without a clean close
    with open(ring_path, "r+b") as f:  # roll the published pair (and head's copy) back by one frame
        f.seek(128)
        f.write(struct.pack("<QQ", head1, seq1))
        f.seek(6 * 128)
        f.write(struct.pack("<Q", head1))
    assert [bytes(f.payload) for f in rd.read()] == [b"one"]
    rd.commit()
    p2 = ring.Producer(ring_path)
    p2.write(b"three")
    got = [(f.seq, bytes(f.payload)) for f in rd.read()]
    assert got[0] == (1, b"two")
    assert got[1][0] == 2 and b"producer_restart" in got[1][1]
    assert got[2][0] == 3 and b"producer_died" in got[2][1]
    assert got[3] == (4, b"three")
    p2.close()
    rd.close()


def test_reader_killed_mid_batch_resumes_without_loss(ring_path):
    ring.create(ring_path, 1 << 16).close()
    ring.Reader(ring_path, "flusher", tethered=True).close()
    r, w = os.pipe()

    def child():
        rd = ring.Reader(ring_path, "flusher", tethered=True)
        b = rd.read()
        rd.commit_to(int(b.pos[3]), int(b.seq[3]))  # committed 0..2 only
        b2 = rd.read()  # holds the rest, uncommitted
        os.write(w, b"%d %d\n" % (len(b), len(b2)))
        signal.pause()

    with ring.Producer(ring_path) as p:
        for i in range(20):
            p.write(b"%d" % i)
        pid = _fork(child)
        line = os.read(r, 100)
        assert line.startswith(b"20 0")
        with pytest.raises(ring.ReaderBusy):
            ring.Reader(ring_path, "flusher", tethered=True)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        for i in range(20, 25):
            p.write(b"%d" % i)
        rd = ring.Reader(ring_path, "flusher", tethered=True)
        assert rd.resumed
        got = []
        while True:
            b = rd.read()
            if not len(b):
                break
            got += [bytes(f.payload) for f in b]
            rd.commit(b)
        assert got == [b"%d" % i for i in range(3, 25)], "nothing lost, nothing skipped"
        rd.close()


def test_dead_producer_is_visible(ring_path):
    ring.create(ring_path, 1 << 16).close()
    pid = _fork(lambda: (ring.Producer(ring_path).write(b"x"), os.kill(os.getpid(), signal.SIGKILL)))
    os.waitpid(pid, 0)
    st = ring.stats(ring_path)
    assert st["producer"]["pid"] == pid
    assert st["producer"]["state"] == "running" and not st["producer"]["alive"]
    rd = ring.Reader(ring_path, "x", tethered=False, start="oldest")
    assert rd.producer_stopped()
    rd.close()
