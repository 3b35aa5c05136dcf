"""Every refused frame ends up in a record, whatever stops or crashes.

The header counts frames refused (drops_full + drops_too_large) and frames
written as records (drops_recorded); a producer pays the difference with a
drop record, and one that cannot leaves it for the next producer, which
writes it before anything else.  Records that must land use the reserve
ordinary writes leave free.
"""
import os
import signal

import orjson

import ring
from ring import FrameType, WriteStatus

CAP = 1 << 16


def _controls(rd):
    out = []
    while True:
        b = rd.read()
        if not len(b):
            return out
        out += [(f.seq, orjson.loads(bytes(f.payload))) for f in b if f.type == FrameType.CONTROL]
        rd.commit(b)


def _drain(rd):
    frames = []
    while True:
        b = rd.read()
        if not len(b):
            return frames
        frames += [(f.seq, f.type, bytes(f.payload)) for f in b]
        rd.commit(b)


def _recorded(controls):
    """Dropped frames the records account for (drop counts, one per oversize)."""
    return sum(c["count"] for _, c in controls if c["kind"] == "drop") + \
        sum(1 for _, c in controls if c["kind"] == "oversize")


def _fill_until_full(p, size=8):
    """Write until refused; with small frames what is left is too small for
    even a drop record (so it stays pending)."""
    n = 0
    while p.write(b"x" * size) == WriteStatus.OK:
        n += 1
    return n


def test_header_counts_drops_and_records(ring_path):
    ring.create(ring_path, CAP).close()
    rd = ring.Reader(ring_path, "flusher", tethered=True)
    p = ring.Producer(ring_path)
    _fill_until_full(p)
    for _ in range(4):
        assert p.write(b"y" * 8) == WriteStatus.FULL
    st = ring.stats(ring_path)
    refused = st["drops"]["full"]
    assert refused == 5 and st["drops_recorded"] == 0 and st["drops_unrecorded"] == 5
    frames = _drain(rd)  # room returns
    p.poll()             # the drop record goes in
    st = ring.stats(ring_path)
    assert st["drops_recorded"] == refused and st["drops_unrecorded"] == 0
    ctl = _controls(rd)
    print(f"frames refused {refused}, frames in records {_recorded(ctl)}, written {len(frames)}")
    assert _recorded(ctl) == refused
    p.close()
    rd.close()


def test_close_with_ring_full_writes_the_record_into_the_reserve(ring_path):
    """The flusher stalled, the shard stops: the drop record and a reserved
    stop record still land."""
    ring.create(ring_path, CAP).close()
    rd = ring.Reader(ring_path, "flusher", tethered=True)
    p = ring.Producer(ring_path)
    _fill_until_full(p)
    for _ in range(7):
        assert p.write(b"late") == WriteStatus.FULL
    assert p.write_control("shard_stop", reserved=True, reason="test") == WriteStatus.OK
    p.close()
    st = ring.stats(ring_path)
    refused = st["drops"]["full"] + st["drops"]["too_large"]
    ctl = _controls(rd)
    kinds = [c["kind"] for _, c in ctl]
    print(f"frames refused {refused}, frames in records {_recorded(ctl)}")
    assert kinds == ["drop", "shard_stop"], "the drop record comes before the stop record"
    assert _recorded(ctl) == refused == 8 and st["drops_unrecorded"] == 0
    rd.close()


def test_owed_drops_survive_a_crash_and_go_first(ring_path):
    """The producer is SIGKILLed with a drop record pending and no room: the
    next producer writes it, then producer_restart and producer_died, before
    any other frame."""
    ring.create(ring_path, CAP).close()
    rd = ring.Reader(ring_path, "flusher", tethered=True)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            p = ring.Producer(ring_path, reserve=0)  # nothing kept back: the record cannot land
            _fill_until_full(p)
            for _ in range(9):
                p.write(b"lost")
            os.write(w, b"1")
            signal.pause()
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"1"
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(r)
    st = ring.stats(ring_path)
    refused = st["drops"]["full"]
    assert refused == 10 and st["drops_unrecorded"] == 10
    data = _drain(rd)
    p = ring.Producer(ring_path)
    p.write(b"first after restart")
    frames = _drain(rd)
    kinds = [orjson.loads(f[2])["kind"] if f[1] == FrameType.CONTROL else f[2] for f in frames]
    assert kinds == ["drop", "producer_restart", "gap", b"first after restart"]
    drop = orjson.loads(frames[0][2])
    assert drop["reasons"] == {"unrecorded": 10} and drop["prev_pid"] == pid
    assert drop["first_ns"] <= drop["last_ns"]
    assert [f[0] for f in frames] == list(range(len(data), len(data) + 4)), "sequences continue"
    st = ring.stats(ring_path)
    print(f"frames refused {refused}, frames in records {drop['count']}")
    assert st["drops_recorded"] == refused and st["drops_unrecorded"] == 0
    p.close()
    rd.close()


def test_records_wait_in_order_when_even_the_reserve_is_gone(ring_path, caplog):
    ring.create(ring_path, CAP).close()
    rd = ring.Reader(ring_path, "flusher", tethered=True)
    p = ring.Producer(ring_path, reserve=0)
    _fill_until_full(p, size=8)
    p._rf.close()  # dies without closing, ring full to the last byte
    p2 = ring.Producer(ring_path, reserve=0)
    assert p2.pending_records == 3  # the owed drop, restart and died wait for room
    logged = {r.event: r.kv for r in caplog.records if getattr(r, "event", None)}
    assert logged["drops_owed"]["frames"] == 1 and logged["drops_owed"]["path"] == ring_path
    assert logged["records_waiting"]["records"] == 3
    assert p2.write(b"must not overtake") == WriteStatus.FULL
    assert p2.raw_write(p2.handle, b"nor this", 8, 1, 0, 0, 0) == -3  # RING_HELD
    data = _drain(rd)
    p2.poll()
    frames = _drain(rd)
    recs = [orjson.loads(f[2]) for f in frames]
    assert [r["kind"] for r in recs] == ["drop", "producer_restart", "gap", "drop"]
    assert recs[0]["reasons"] == {"unrecorded": 1} and recs[3]["count"] == 1
    st = ring.stats(ring_path)
    assert st["drops_unrecorded"] == 0 and st["drops_recorded"] == st["drops"]["full"] == 2
    assert p2.write(b"after") == WriteStatus.OK
    assert _drain(rd)[0][2] == b"after"
    assert len(data) > 0
    p2.close()
    rd.close()


def test_oversize_record_counts_as_recorded(ring_path):
    ring.create(ring_path, CAP, max_frame=CAP).close()
    rd = ring.Reader(ring_path, "flusher", tethered=True)
    with ring.Producer(ring_path) as p:
        assert p.write(b"z" * (CAP + 1)) == WriteStatus.TOO_LARGE
    st = ring.stats(ring_path)
    assert st["drops"]["too_large"] == 1 and st["drops_recorded"] == 1
    assert [c["kind"] for _, c in _controls(rd)] == ["oversize"]
    rd.close()
