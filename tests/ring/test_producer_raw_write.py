"""Producer.raw_write: the C write for a caller's own hot path, and the rule
that makes it safe - while a gap record is pending (and after close) it
answers "not written", so frames go through write() and the gap record is
written before the first frame after the drop."""
import orjson

import ring
from ring import FrameType, WriteStatus
from ring.frame import FrameFlags

CAP = 1 << 16
DATA, CONTROL = int(FrameType.DATA), int(FrameType.CONTROL)


def make(path, cap=CAP):
    ring.create(path, cap).close()
    return path


def frames(rd):
    out = []
    while True:
        b = rd.read()
        if not len(b):
            return out
        out.extend((f.seq, f.type, f.flags, f.conn, f.ts, bytes(f.payload)) for f in b)
        rd.commit(b)


def test_raw_write_stores_the_same_frame_as_write(ring_path):
    make(ring_path)
    with ring.Reader(ring_path, "r", tethered=True) as rd, ring.Producer(ring_path) as p:
        payload = b'{"channel":"trade"}'
        seq = p.raw_write(p.handle, payload, len(payload), DATA, int(FrameFlags.BINARY), 7, 1234)
        assert seq == 0
        assert p.write(payload, DATA, 1234, 7, int(FrameFlags.BINARY)) == WriteStatus.OK
        a, b = frames(rd)
        assert a[1:] == b[1:] == (DATA, int(FrameFlags.BINARY), 7, 1234, payload)
        assert p.last_seq == 1


def test_raw_write_refuses_while_a_gap_record_is_pending(ring_path):
    make(ring_path)
    with ring.Reader(ring_path, "r", tethered=True) as rd, ring.Producer(ring_path) as p:
        raw = p.raw_write
        big = b"x" * 1000
        while p.raw_write(p.handle, big, len(big), DATA, 0, 1, 1000) >= 0:
            pass
        # The caller hands the refused frame to write(), which counts it.
        assert p.write(big, DATA, 1000, 1) == WriteStatus.FULL
        assert p.pending_gap == 1
        frames(rd)                                    # room again
        # Pending gap: "not written", nothing stored, even though it would fit.
        assert p.raw_write(p.handle, b"later", 5, DATA, 0, 1, 2000) < 0
        assert p.write(b"later", DATA, 2000, 1) == WriteStatus.OK
        assert p.raw_write is raw                     # one C function throughout: the hold lifts
        assert p.raw_write(p.handle, b"after", 5, DATA, 0, 1, 3000) >= 0
        got = frames(rd)
        assert [g[1] for g in got] == [CONTROL, DATA, DATA]
        assert orjson.loads(got[0][5])["kind"] == "drop"
        assert [g[5] for g in got[1:]] == [b"later", b"after"]


def test_raw_write_leaves_large_frames_to_write(ring_path):
    make(ring_path)
    with ring.Reader(ring_path, "r", tethered=True) as rd, ring.Producer(ring_path) as p:
        big = bytes(range(256)) * ((p.frag_limit // 256) + 4)   # above the fragment limit
        assert p.raw_write(p.handle, big, len(big), DATA, 0, 2, 5) < 0
        assert frames(rd) == []                        # nothing written
        assert p.write(big, DATA, 5, 2) == WriteStatus.OK   # the chain
        asm = ring.Assembler()
        msgs = [asm.feed(seq, ts, typ, fl, conn, pl) for seq, typ, fl, conn, ts, pl in frames(rd)]
        msgs = [m for m in msgs if m is not None]
        assert [(m.type, m.conn, bytes(m.payload)) for m in msgs] == [(DATA, 2, big)]


def test_raw_write_is_inert_after_close(ring_path):
    make(ring_path)
    p = ring.Producer(ring_path)
    p.close()
    assert p.raw_write(p.handle, b"x", 1, DATA, 0, 0, 1) < 0
