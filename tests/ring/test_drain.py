"""ring.FileDrain: frames from a tethered reader straight into a file.

Both ways a batch is written are covered (csrc/drain.c): write first, then
check (a backlog of 64 KiB or more that ends at a known boundary) and walk
first, then write (a trickle, a batch cut by the room left, skipping).  The
file is parsed independently here, record by record, and compared with what
the producer wrote.
"""
import os
import random
import shutil
import struct
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import ring
from ring import FrameType, WriteStatus
from ring.drain import FileDrain
from common.errors import CorruptFrame
from ring.frame import frame_crc

CAP = 1 << 20                  # checkpoints every 128 KiB, a wrap every MiB
_REC = struct.Struct("<IIQqBBHI")
H_CHECKPOINTS = 5 * 128        # csrc/layout.h


def records(path, start=0):
    """(offset, seq, ts, payload, type) of every record in the file; checks CRC and order."""
    with open(path, "rb") as f:
        data = f.read()
    out, off, expect = [], start, None
    while off < len(data):
        size, lo, seq, ts, typ, _fl, _conn, crc = _REC.unpack_from(data, off)
        assert size >= 32 and lo == seq & 0xFFFFFFFF and typ in (1, 2, 4, 5, 6), (off, size, typ)
        assert frame_crc(data[off:off + size]) == crc, off
        assert expect is None or seq == expect, (seq, expect)
        out.append((off, seq, ts, data[off + 32:off + size], typ))
        expect = seq + 1
        off += (size + 7) & ~7
    assert off == len(data)
    return out


@pytest.fixture
def env(ring_path, tmp_path):
    ring.create(ring_path, CAP).close()
    p = ring.Producer(ring_path)
    rd = ring.Reader(ring_path, "flusher", tethered=True)
    out = str(tmp_path / "out.bin")
    fd = os.open(out, os.O_RDWR | os.O_CREAT, 0o600)
    yield p, rd, out, fd
    os.close(fd)
    rd.close()
    p.close()


def produce(p, n, rng, lo=0, hi=3000):
    sent = []
    for _ in range(n):
        payload = rng.randbytes(rng.randrange(lo, hi))
        seq = p.write(payload)
        assert seq == WriteStatus.OK
        sent.append(payload)
    return sent


def drain_all(dr, rd, fd, room=1 << 40):
    off = os.fstat(fd).st_size
    results = []
    while True:
        r = dr.write(fd, off, room)
        if not r.frames and not r.skipped:
            return results
        off += r.nbytes
        assert os.fstat(fd).st_size == off      # nothing past what it reports
        rd.commit()
        results.append(r)


@pytest.mark.parametrize("max_bytes", [96 << 10, 300 << 10, 2 << 20])
def test_backlogs_and_trickles_land_byte_for_byte(env, max_bytes):
    p, rd, out, fd = env
    rng = random.Random(max_bytes)
    dr = FileDrain(rd, max_bytes=max_bytes, index_every=7)
    sent, ways = [], set()
    for rnd in range(40):
        # alternate: a backlog of most of the ring (write first, across the
        # wrap and its padding), then a trickle (walk first)
        n = 600 if rnd % 2 == 0 else rng.randrange(1, 20)
        sent += produce(p, n, rng)
        ways |= {(n > 100, r.written_first) for r in drain_all(dr, rd, fd)}
    assert (True, True) in ways and (False, False) in ways
    got = records(out)
    assert [r[1] for r in got] == list(range(len(sent)))
    assert [r[3] for r in got] == sent
    assert rd.next_seq == len(sent)


def test_summary_and_index_describe_the_records(env):
    p, rd, out, fd = env
    rng = random.Random(1)
    dr = FileDrain(rd, max_bytes=256 << 10, index_every=5)
    produce(p, 700, rng, 100, 1500)
    res, index = [], []
    off = n = 0
    while True:
        r = dr.write(fd, off, 1 << 40, records_before=n)
        if not r.frames:
            break
        rd.commit()
        index.append((r.index_seq, r.index_ts, r.index_off))
        res.append(r)
        off += r.nbytes
        n += r.frames
    got = records(out)
    by_off = {g[0]: g for g in got}
    n_before = 0
    for r, (iseq, its, ioff) in zip(res, index):
        mine = got[n_before:n_before + r.frames]
        assert r.first_seq == mine[0][1] and r.last_seq == mine[-1][1]
        ts = [m[2] for m in mine]
        assert (r.first_ts, r.last_ts, r.min_ts, r.max_ts) == (ts[0], ts[-1], min(ts), max(ts))
        assert r.ts_monotonic == all(a <= b for a, b in zip(ts, ts[1:]))
        # every 5th record of the file, counted across calls
        want = [m for k, m in enumerate(mine) if (n_before + k) % 5 == 0]
        assert iseq == [m[1] for m in want] and its == [m[2] for m in want]
        assert ioff == [m[0] for m in want]
        assert all(by_off[o][1] == q for o, q in zip(ioff, iseq))
        n_before += r.frames
    assert n_before == 700 and len(res) >= 2
    # latency samples: the first 64 frames of each call, then every 16th
    want = sum(min(r.frames, 64) + len([k for k in range(64, r.frames) if k % 16 == 0]) for r in res)
    assert int(dr.latency_hist.sum()) == want


def test_a_backlog_is_cut_at_max_bytes(env):
    p, rd, out, fd = env
    rng = random.Random(2)
    dr = FileDrain(rd, max_bytes=200 << 10, index_every=1024)
    produce(p, 800, rng, 500, 600)               # ~ 500 KiB
    res = drain_all(dr, rd, fd)
    assert len(res) >= 3 and res[0].written_first
    assert all(r.nbytes <= 200 << 10 for r in res)
    assert [r[1] for r in records(out)] == list(range(800))


def test_room_stops_the_batch_before_a_frame_that_does_not_fit(env):
    p, rd, out, fd = env
    rng = random.Random(3)
    dr = FileDrain(rd, max_bytes=1 << 20, index_every=1024)
    produce(p, 400, rng, 900, 1000)              # ~ 400 KiB
    r = dr.write(fd, 0, 100_000)
    assert r.room_full and 0 < r.nbytes <= 100_000 and not r.written_first
    assert r.frames == len(records(out)) and rd.next_seq == r.frames
    # an empty file takes one frame larger than its room
    p2 = rd.next_seq
    os.ftruncate(fd, 0)
    r = dr.write(fd, 0, 10, oversize_ok=True)
    assert r.frames == 1 and r.first_seq == p2 and r.room_full


def test_skip_below_consumes_without_writing(env):
    p, rd, out, fd = env
    rng = random.Random(4)
    dr = FileDrain(rd, max_bytes=1 << 20, index_every=1024)
    sent = produce(p, 300, rng, 100, 1000)
    r = dr.write(-1, 0, 0, skip_below=120)
    assert (r.skipped, r.frames, r.nbytes) == (120, 0, 0) and r.room_full
    assert rd.next_seq == 120
    drain_all(dr, rd, fd)
    got = records(out)
    assert [g[1] for g in got] == list(range(120, 300)) and [g[3] for g in got] == sent[120:]


@pytest.mark.parametrize("backlog", [30, 600])
def test_a_damaged_frame_stops_the_drain_and_nothing_of_it_stays(env, backlog):
    """600 frames: written first, the damage found after; 30: walked first."""
    p, rd, out, fd = env
    rng = random.Random(5)
    dr = FileDrain(rd, max_bytes=2 << 20, index_every=1024)
    produce(p, backlog, rng, 100, 1500)
    b = rd.read()                                 # find the frame to damage, then go back
    victim = backlog // 2
    pos = int(b.pos[victim])
    rd.rewind()
    mm = rd._rf.mm
    at = 4096 + (pos & (CAP - 1)) + 8             # the frame's 64-bit sequence
    mm[at:at + 8] = struct.pack("<Q", 999_999)
    r = dr.write(fd, 0, 1 << 40)
    assert r.written_first == (backlog == 600)
    assert r.frames == victim and rd.next_seq == victim
    rd.commit()
    assert os.fstat(fd).st_size == r.nbytes
    with pytest.raises(CorruptFrame) as ei:
        dr.write(fd, r.nbytes, 1 << 40)
    assert ei.value.position == pos
    assert os.fstat(fd).st_size == r.nbytes and rd.next_seq == victim
    assert [g[1] for g in records(out)] == list(range(victim))


def test_a_checkpoint_that_is_not_a_frame_start_only_ends_a_batch(env):
    """Checkpoints are trusted as batch ends only as far as the frames agree."""
    p, rd, out, fd = env
    rng = random.Random(6)
    dr = FileDrain(rd, max_bytes=300 << 10, index_every=1024)
    produce(p, 700, rng, 500, 1500)               # ~ 700 KiB, under one lap
    mm = rd._rf.mm
    start = rd.position
    for k in range(8):                            # every checkpoint 8 bytes off a frame start
        at = H_CHECKPOINTS + 16 * k
        cp = struct.unpack_from("<Q", mm, at)[0]
        if cp != 2**64 - 1 and cp > start:
            struct.pack_into("<Q", mm, at, cp + 8)
    drain_all(dr, rd, fd)
    assert [g[1] for g in records(out)] == list(range(700))


def test_a_failed_write_leaves_the_cursor_where_it_was(env, tmp_path):
    p, rd, out, fd = env
    rng = random.Random(7)
    dr = FileDrain(rd, max_bytes=2 << 20, index_every=1024)
    produce(p, 300, rng, 500, 1500)
    ro = os.open(out, os.O_RDONLY)
    try:
        for _ in range(2):
            with pytest.raises(OSError):
                dr.write(ro, 0, 1 << 40)
            assert rd.next_seq == 0
    finally:
        os.close(ro)
    drain_all(dr, rd, fd)
    assert [g[1] for g in records(out)] == list(range(300))


def test_only_a_tethered_reader_can_drain(ring_path):
    ring.create(ring_path, CAP).close()
    with ring.Reader(ring_path, "pub", tethered=False) as rd:
        with pytest.raises(ValueError):
            FileDrain(rd, max_bytes=1 << 20, index_every=1)


def test_index_entries_are_the_results_own(env):
    p, rd, out, fd = env
    dr = FileDrain(rd, max_bytes=1 << 20, index_every=1)
    produce(p, 3, random.Random(8), 10, 20)
    r = dr.write(fd, 0, 1 << 40)
    rd.commit()
    produce(p, 2, random.Random(9), 10, 20)
    r2 = dr.write(fd, r.nbytes, 1 << 40, records_before=3)
    assert r.index_seq == [0, 1, 2] and r2.index_seq == [3, 4]


def _park_before_the_ring_end(p, rd, dr, fd, left_max):
    """Produce and drain 1000-byte frames until the cursor is less than
    left_max bytes before the ring's end (and not at a lap boundary)."""
    off = os.fstat(fd).st_size
    while True:
        assert p.write(b"x" * 1000) == WriteStatus.OK
        r = dr.write(fd, off, 1 << 40)
        off += r.nbytes
        rd.commit()
        left = CAP - (rd.position & (CAP - 1))
        if left < left_max:
            return left


@pytest.mark.parametrize("tail", ["frames", "padding"])
def test_a_short_tail_before_the_ring_end_is_walked_then_the_backlog_written(env, tail):
    p, rd, out, fd = env
    dr = FileDrain(rd, max_bytes=2 << 20, index_every=1024)
    left = _park_before_the_ring_end(p, rd, dr, fd, 3000 if tail == "frames" else 1032)
    n0 = rd.next_seq
    for i in range(600):
        assert p.write(b"%06d" % i * 160) == WriteStatus.OK      # 960 B, span 992
    r = dr.write(fd, os.fstat(fd).st_size, 1 << 40)
    rd.commit()
    if tail == "frames":          # the frames before the end, walked first, then stop
        assert not r.written_first and 0 < r.nbytes <= left and r.frames == left // 992
        r = dr.write(fd, os.fstat(fd).st_size, 1 << 40)
        rd.commit()
    # from the ring's start on, the backlog is written first in the same call
    assert r.written_first and r.frames > 300
    drain_all(dr, rd, fd)
    got = records(out)
    assert [g[1] for g in got] == list(range(n0 + 600)) and rd.next_seq == n0 + 600
    assert [g[3] for g in got[n0:]] == [b"%06d" % i * 160 for i in range(600)]


# -- property: whatever the sizes, limits and interleaving, the file is the frames ---------------
drain_ops = st.lists(
    st.one_of(
        st.tuples(st.just("w"), st.integers(0, 600), st.integers(0, 3000)),  # n frames up to size
        st.tuples(st.just("d"), st.one_of(st.integers(1, 1 << 20), st.just(1 << 40))),  # room
    ),
    min_size=1, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=drain_ops, max_bytes=st.sampled_from([4096, 70 << 10, 200 << 10, 2 << 20, 2 << 20]),
       every=st.integers(1, 50), seed=st.integers(0, 2**32))
def test_the_file_is_the_frames_whatever_the_batches(ops, max_bytes, every, seed):
    rng = random.Random(seed)
    d = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        path = os.path.join(d, "p.ring")
        ring.create(path, CAP).close()
        p = ring.Producer(path)
        rd = ring.Reader(path, "flusher", tethered=True)
        out = os.path.join(d, "out.bin")
        fd = os.open(out, os.O_RDWR | os.O_CREAT, 0o600)
        dr = FileDrain(rd, max_bytes=max_bytes, index_every=every)
        sent, index = [], []
        state = {"off": 0, "records": 0}

        def drain(room):
            while True:
                off = state["off"]
                r = dr.write(fd, off, room, oversize_ok=True, records_before=state["records"])
                assert os.fstat(fd).st_size == off + r.nbytes
                assert r.nbytes <= max(room, max_bytes) or r.frames == 1
                if not r.frames:
                    return
                rd.commit()
                state["off"] += r.nbytes
                state["records"] += r.frames
                index.extend(zip(r.index_seq, r.index_ts, r.index_off))

        for op, *args in ops:
            if op == "w":
                n, size = args
                for _ in range(n):
                    payload = rng.randbytes(rng.randrange(0, size + 1))
                    if p.write(payload) != WriteStatus.OK:
                        break      # ring full: the producer records the drop itself
                    sent.append(payload)
            else:
                drain(args[0])
        p.poll()
        drain(1 << 40)
        got = records(out)
        assert [g[3] for g in got if g[4] == FrameType.DATA] == sent
        # every `every`-th record of the file is in the index, with its offset
        assert index == [(g[1], g[2], g[0]) for k, g in enumerate(got) if k % every == 0]
        assert rd.next_seq == (got[-1][1] + 1 if got else 0)
        os.close(fd)
        rd.close()
        p.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
