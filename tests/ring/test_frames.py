"""Single-process behaviour of producer and readers: layout, wrap, limits."""
import os
import random
import threading

import pytest
from timing import timeout

import ring
from ring import FrameType, WriteStatus
from common.errors import CorruptFrame, Lapped, NoReaderSlot, ProducerBusy, ReaderBusy
from ring.frame import decode_header, encode

CAP = 1 << 16
HDR = 32


def make(path, cap=CAP, **kw):
    ring.create(path, cap, **kw).close()
    return path


def drain(rd, out=None, commit=True):
    out = [] if out is None else out
    while True:
        b = rd.read()
        if not len(b):
            return out
        out.extend((f.seq, f.type, bytes(f.payload)) for f in b)
        if commit:
            rd.commit(b)


def test_roundtrip_metadata(ring_path):
    make(ring_path)
    with ring.Reader(ring_path, "r", tethered=True) as rd, ring.Producer(ring_path) as p:
        assert p.write(b"hello", ts=123, conn=7) == WriteStatus.OK
        assert p.write(b"\x00\xff", type=FrameType.CONTROL, ts=456, conn=65535, flags=1) == WriteStatus.OK
        b = rd.read()
        assert len(b) == 2
        assert b.seq.tolist() == [0, 1]
        assert b.ts.tolist() == [123, 456]
        assert b.conn.tolist() == [7, 65535]
        assert b.type.tolist() == [FrameType.DATA, FrameType.CONTROL]
        assert b.flags.tolist() == [0, 1]
        assert b.length.tolist() == [5, 2]
        assert bytes(b.payload(0)) == b"hello"
        # The stored bytes are exactly the segment-file record format.
        assert bytes(b.raw(0)) == encode(b"hello", 0, 123, conn=7)


def test_timestamp_taken_inside_the_call(ring_path):
    import time
    make(ring_path)
    with ring.Reader(ring_path, "r", tethered=True) as rd, ring.Producer(ring_path) as p:
        t0 = time.time_ns()
        p.write(b"x")
        t1 = time.time_ns()
        assert t0 <= rd.read().ts[0] <= t1


def test_smallest_and_largest_single_frames(ring_path):
    make(ring_path)
    with ring.Reader(ring_path, "r", tethered=True) as rd, ring.Producer(ring_path) as p:
        big = os.urandom(p.frag_limit)
        assert p.write(b"") == WriteStatus.OK
        assert p.write(big) == WriteStatus.OK
        got = drain(rd)
        assert [g[2] for g in got] == [b"", big]
        assert [g[1] for g in got] == [FrameType.DATA, FrameType.DATA]


def fill(p, nbytes):
    """Write frames whose padded sizes add up to exactly nbytes; return count."""
    assert nbytes % 8 == 0
    n = 0
    while nbytes:
        span = min(nbytes, (p.frag_limit + HDR) & ~7)
        if nbytes - span and nbytes - span < HDR:
            span -= HDR
        p.write(b"a" * (span - HDR))
        nbytes -= span
        n += 1
    return n


def test_wraparound_padding_and_exact_fit(ring_path):
    """Walk the head to exact offsets before the end of the ring."""
    make(ring_path)
    # reserve=0: the fills below run the ring to its last byte
    with ring.Reader(ring_path, "r", tethered=True) as rd, ring.Producer(ring_path, reserve=0) as p:
        # 1) leave exactly 64 bytes to the end, then write a 100-byte frame:
        #    a 64-byte padding frame fills the tail and the frame starts at CAP.
        k = fill(p, CAP - 64 - 104)
        rd.commit(rd.read())  # make room for the wrap
        p.write(b"a" * 72)  # ends exactly 64 bytes before the end
        p.write(b"b" * 100)
        b = rd.read()
        assert b.pos.tolist() == [CAP - 64 - 104, CAP]
        # the batch copy reads each payload where payload(i) does, across the end
        assert b.payloads() == [bytes(b.payload(i)) for i in range(len(b))] == [b"a" * 72, b"b" * 100]
        assert len(b.spans()) == 2  # padding left out of the raw spans
        assert sum(len(s) for s in b.spans()) == 104 + HDR + 104
        rd.commit(b)
        k += 1
        # 2) exact fit: a frame whose padded size is exactly the tail.
        head = CAP + ((HDR + 100 + 7) & ~7)
        tail = 2 * CAP - head
        k2 = fill(p, tail - 64)
        rd.commit(rd.read())
        p.write(b"c" * 32)  # padded size 64: ends exactly at the end
        p.write(b"d")
        k2 += 1
        b = rd.read()
        assert b.pos.tolist() == [2 * CAP - 64, 2 * CAP]
        assert len(b.spans()) == 2  # split at the end of the ring, no padding between
        assert sum(len(s) for s in b.spans()) == 64 + 40
        rd.commit(b)
        # 3) a tail shorter than a header is skipped by rule (no padding frame).
        head = 2 * CAP + ((HDR + 1 + 7) & ~7)
        tail = 3 * CAP - head
        k3 = fill(p, tail - 24 - 64)
        rd.commit(rd.read())
        p.write(b"e" * 32)  # leaves 24 bytes: less than a header, skipped by rule
        p.write(b"f")
        k3 += 1
        b = rd.read()
        assert b.pos.tolist() == [3 * CAP - 24 - 64, 3 * CAP]
        assert bytes(b.payload(len(b) - 1)) == b"f"
        assert b.seq.tolist()[-1] == k + k2 + k3 + 2, "padding consumes no sequence number"
        assert len(b.spans()) == 2


@pytest.mark.parametrize("start", [(1 << 32) - 40, (1 << 32) - CAP // 2, (1 << 63) - 4 * CAP - 8, 1 << 63])
def test_positions_near_2_32_and_2_63(ring_path, start):
    make(ring_path, start_position=start)
    rng = random.Random(start)
    with ring.Reader(ring_path, "r", tethered=True) as rd, ring.Producer(ring_path) as p:
        sent, got, fulls = [], [], 0
        for i in range(3000):
            data = rng.randbytes(rng.randint(0, 700))
            if p.write(data) != WriteStatus.OK:  # the caller decides: here, retry
                fulls += 1
                drain(rd, got)
                assert p.write(data) == WriteStatus.OK
            sent.append(data)
        drain(rd, got)
        assert [g[2] for g in got if g[1] == FrameType.DATA] == sent
        assert sum(g[1] == FrameType.CONTROL for g in got) == fulls > 0  # one gap record per episode
        assert [g[0] for g in got] == list(range(3000 + fulls))
        assert rd.position > start + 3 * CAP


def test_full_returns_status_and_records_one_gap(ring_path):
    import orjson
    make(ring_path)
    with ring.Reader(ring_path, "r", tethered=True) as rd, ring.Producer(ring_path) as p:
        while p.write(b"x" * 1000, ts=1000) == WriteStatus.OK:
            pass
        assert p.pending_gap == 1
        # The next write finds room for the small gap record before itself.
        while p.write(b"", ts=2000) == WriteStatus.OK:  # now not even a gap record fits
            pass
        for k in range(5):
            assert p.write(b"y" * 1000, ts=5000 + k) == WriteStatus.FULL
        assert p.pending_gap == 6
        assert ring.stats(ring_path)["drops"]["full"] == 7
        got = drain(rd)
        recs = [orjson.loads(g[2]) for g in got if g[1] == FrameType.CONTROL]
        assert recs == [{"kind": "drop", "count": 1, "bytes": 1000, "first_ns": 1000, "last_ns": 1000,
                         "reasons": {"ring_full": 1}}]
        p.poll()  # room is back: the gap record is written even with no new frame
        got = drain(rd)
        assert len(got) == 1 and got[0][1] == FrameType.CONTROL
        rec = orjson.loads(got[0][2])
        assert rec == {"kind": "drop", "count": 6, "bytes": 5000, "first_ns": 2000, "last_ns": 5004,
                       "reasons": {"ring_full": 6}}
        assert ring.stats(ring_path)["gap_records"] == 2
        assert p.pending_gap == 0


def test_untethered_reader_does_not_hold_producer(ring_path):
    make(ring_path)
    with ring.Reader(ring_path, "pub", tethered=False) as rd, ring.Producer(ring_path) as p:
        for i in range(1000):
            assert p.write(b"z" * 500) == WriteStatus.OK
        with pytest.raises(Lapped) as ei:
            rd.read()
        e = ei.value
        assert e.sequence == 0 and e.resume_sequence > 0
        pos, seq = rd.resume_oldest()
        assert seq == e.resume_sequence
        got = drain(rd)
        assert [g[0] for g in got] == list(range(seq, 1000))
        assert ring.stats(ring_path)["readers"][0]["lapped"] == 1


def test_untethered_check_detects_overwrite_after_read(ring_path):
    make(ring_path)
    with ring.Reader(ring_path, "pub", tethered=False) as rd, ring.Producer(ring_path) as p:
        p.write(b"first")
        b = rd.read()
        rd.check(b)  # nothing overwritten yet
        for i in range(200):
            p.write(b"q" * 500)
        with pytest.raises(Lapped):
            rd.check(b)


def test_oversize_refused_with_record(ring_path):
    make(ring_path, max_frame=CAP)
    with ring.Reader(ring_path, "r", tethered=True) as rd, ring.Producer(ring_path) as p:
        assert p.write(b"x" * (CAP + 1), ts=77, conn=3) == WriteStatus.TOO_LARGE
        got = drain(rd)
        import orjson
        rec = orjson.loads(got[0][2])
        assert rec == {"kind": "oversize", "size": CAP + 1, "limit": CAP}
        assert ring.stats(ring_path)["drops"]["too_large"] == 1


def test_fragments_reassembled(ring_path):
    make(ring_path)
    with ring.Reader(ring_path, "r", tethered=True) as rd, ring.Producer(ring_path) as p:
        big = os.urandom(3 * p.frag_limit + 17)
        assert p.write(big, type=FrameType.DATA, ts=99, conn=4, flags=1) == WriteStatus.OK
        p.write(b"after")
        a = ring.Assembler()
        msgs = []
        for f in rd.read():
            m = a.feed(*f)
            if m:
                msgs.append(m)
        assert len(msgs) == 2
        m = msgs[0]
        assert m.payload == big and (m.seq, m.last_seq) == (0, 3)
        assert (m.ts, m.conn, m.type, m.flags) == (99, 4, FrameType.DATA, 1)
        assert bytes(msgs[1].payload) == b"after" and msgs[1].seq == 4
        assert ring.stats(ring_path)["fragmented_frames"] == 1


def test_three_mib_frame_through_four_mib_ring_with_draining_reader(ring_path):
    make(ring_path, 4 << 20)
    big = os.urandom(3 << 20)
    out = []
    stop = threading.Event()

    def reader():
        a = ring.Assembler()
        with ring.Reader(ring_path, "r", tethered=True) as rd:
            ready.set()
            while not stop.is_set() or rd.available():
                if not rd.wait(0.05):
                    continue
                b = rd.read()
                for f in b:
                    m = a.feed(f.seq, f.ts, f.type, f.flags, f.conn, bytes(f.payload))
                    if m:
                        out.append(m)
                rd.commit(b)

    ready = threading.Event()
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    ready.wait()
    try:
        # frag_timeout bounds the wait for room; generous so a loaded CI
        # machine does not turn a slow reader into a drop.
        with ring.Producer(ring_path, frag_timeout=timeout(30)) as p:
            for _ in range(3):  # three in a row: more than the ring holds at once
                assert p.write(big) == WriteStatus.OK
    finally:
        stop.set()
        t.join(timeout(30))
    assert [m.payload == big for m in out] == [True, True, True]


def test_fragment_chain_aborted_when_no_room(ring_path):
    make(ring_path)
    with ring.Reader(ring_path, "r", tethered=True) as rd, ring.Producer(ring_path, frag_timeout=0.05) as p:
        big = os.urandom(CAP * 2)  # cannot fit while nobody drains
        assert p.write(big) == WriteStatus.FULL
        a = ring.Assembler()
        frames = drain_frames(rd)
        p.poll()  # room again: the chain's ABORTED end, then the gap record
        frames += drain_frames(rd)
        msgs = [m for f in frames if (m := a.feed(*f))]
        assert [m.type for m in msgs] == [FrameType.CONTROL]
        assert len(a.dropped) == 1 and "aborted" in a.dropped[0].reason
        import orjson
        rec = orjson.loads(bytes(msgs[0].payload))
        assert rec["kind"] == "drop" and rec["bytes"] == CAP * 2


def drain_frames(rd):
    out = []
    while True:
        b = rd.read()
        if not len(b):
            return out
        out.extend(ring.Frame(f.seq, f.ts, f.type, f.flags, f.conn, bytes(f.payload)) for f in b)
        rd.commit(b)


def test_second_producer_refused_and_restart_continues_sequence(ring_path):
    make(ring_path)
    rd = ring.Reader(ring_path, "r", tethered=True)
    p = ring.Producer(ring_path)
    with pytest.raises(ProducerBusy):
        ring.Producer(ring_path)
    for i in range(10):
        p.write(b"%d" % i)
    p.close()
    p2 = ring.Producer(ring_path)
    assert p2.epoch == 2
    p2.write(b"after")
    got = drain(rd)
    assert [g[0] for g in got] == list(range(12))
    import orjson
    assert orjson.loads(got[10][2]) == {"kind": "producer_restart", "epoch": 2}
    assert got[11][2] == b"after"
    p2.close()
    rd.close()


def test_reader_resumes_by_name_and_redelivers_uncommitted(ring_path):
    make(ring_path)
    with ring.Producer(ring_path) as p:
        rd = ring.Reader(ring_path, "flusher", tethered=True)
        for i in range(10):
            p.write(b"%d" % i)
        b = rd.read()
        assert len(b) == 10
        rd.commit_to(int(b.pos[4]), 4)  # committed 0..3 only
        with pytest.raises(ReaderBusy):
            ring.Reader(ring_path, "flusher", tethered=True)
        rd.close()
        rd = ring.Reader(ring_path, "flusher", tethered=True)
        assert rd.resumed
        assert [g[0] for g in drain(rd)] == list(range(4, 10))
        rd.close()


def test_reader_slots_exhausted(ring_path):
    make(ring_path)
    rds = [ring.Reader(ring_path, f"r{i}", tethered=False) for i in range(8)]
    with pytest.raises(NoReaderSlot):
        ring.Reader(ring_path, "one-too-many", tethered=False)
    rds[3].remove()
    ring.Reader(ring_path, "now-fits", tethered=False).close()
    for r in rds:
        r.close()


def test_removed_tethered_reader_stops_holding_producer(ring_path):
    make(ring_path)
    with ring.Producer(ring_path) as p:
        rd = ring.Reader(ring_path, "slow", tethered=True)
        while p.write(b"x" * 1000) == WriteStatus.OK:
            pass
        rd.close()  # closed, not removed: still holds the producer back
        assert p.write(b"x" * 1000) == WriteStatus.FULL
        assert ring.remove_reader(ring_path, "slow")
        assert p.write(b"x" * 1000) == WriteStatus.OK


def test_crc_verification_detects_corruption(ring_path):
    make(ring_path)
    with ring.Producer(ring_path) as p:
        rd = ring.Reader(ring_path, "r", tethered=True, verify_crc=True)
        p.write(b"good")
        p.write(b"will be damaged")
        with open(ring_path, "r+b") as f:  # flip a payload bit of frame 1
            f.seek(4096 + 40 + 32 + 3)
            c = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([c[0] ^ 0x10]))
        b = rd.read()
        assert len(b) == 1  # the good frame is handed out first
        rd.commit(b)
        with pytest.raises(CorruptFrame) as ei:
            rd.read()
        assert ei.value.sequence == 1
        rd.close()


def test_damaged_commit_word_below_head_is_corruption_not_not_yet(ring_path):
    """Readers walk up to the published head, so a frame there whose commit
    word does not carry the expected sequence is damage, reported loudly
    (not "nothing yet", which would leave a drain spinning on it)."""
    make(ring_path)
    with ring.Producer(ring_path) as p:
        rd = ring.Reader(ring_path, "r", tethered=True)
        p.write(b"good")
        p.write(b"will be damaged")
        with open(ring_path, "r+b") as f:  # frame 1's seq_lo (bytes 4..8) set back to 0
            f.seek(4096 + 40 + 4)
            f.write(b"\0\0\0\0")
        b = rd.read()
        assert [bytes(x.payload) for x in b] == [b"good"]
        rd.commit(b)
        assert rd.wait(5.0)  # head is ahead: news, not a reason to sleep
        with pytest.raises(CorruptFrame) as ei:
            rd.read()
        assert (ei.value.position, ei.value.sequence) == (40, 0)  # where, and what was found there
        rd.close()


def test_stats_readable_without_attaching_a_reader(ring_path):
    make(ring_path)
    with ring.Producer(ring_path) as p, ring.Reader(ring_path, "f", tethered=True) as rd:
        for i in range(5):
            p.write(b"x" * 100)
        rd.read()
        rd.commit()
        st = ring.stats(ring_path)
        assert st["frames"] == 5 and st["bytes"] == 500 and st["next_seq"] == 5
        assert st["producer"]["alive"] and st["producer"]["state"] == "running"
        (r,) = st["readers"]
        assert r["name"] == "f" and r["alive"] and r["lag_frames"] == 0 and r["frames_read"] == 5
    st = ring.stats(ring_path)
    assert not st["producer"]["alive"] and st["producer"]["state"] == "stopped"
    assert not st["readers"][0]["alive"]


def test_header_decodes_like_the_c_side(ring_path):
    make(ring_path)
    with ring.Producer(ring_path) as p, ring.Reader(ring_path, "r", tethered=True) as rd:
        p.write(b"abc", ts=5, conn=9)
        h = decode_header(bytes(rd.read().raw(0)))
        assert (h.size, h.seq, h.ts_ns, h.type, h.conn) == (35, 0, 5, 1, 9)
