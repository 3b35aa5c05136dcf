"""Property-based: random frame sizes and reader speeds.

Whatever the interleaving, a tethered reader sees exactly the frames whose
write returned OK, in order, byte for byte (plus one gap record per run of
refused writes), and an untethered reader sees an in-order subsequence that
is contiguous between the points where it was told it was lapped.
"""
import os
import shutil
import tempfile

import orjson
from hypothesis import HealthCheck, given, settings, strategies as st

import ring
from ring import FrameType, WriteStatus

CAP = 1 << 16

ops = st.lists(
    st.one_of(
        st.tuples(st.just("w"), st.integers(0, 9000)),          # write a frame of this size
        st.tuples(st.just("t"), st.integers(1, 50)),            # tethered reads up to n frames
        st.tuples(st.just("u"), st.integers(1, 50)),            # untethered reads up to n frames
    ),
    min_size=1, max_size=300)


def _read(rd, limit, sink, assembler):
    got = 0
    while got < limit:
        b = rd.read()
        if not len(b):
            break
        for f in b:
            m = assembler.feed(f.seq, f.ts, f.type, f.flags, f.conn, bytes(f.payload))
            if m is not None:
                sink.append(m)
        rd.check(b)
        rd.commit(b)
        got += len(b)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops, start=st.sampled_from([0, (1 << 32) - 4096, (1 << 63) - 3 * CAP]), seed=st.integers(0, 2**32))
def test_readers_see_exactly_what_was_written(ops, start, seed):
    d = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        path = os.path.join(d, "p.ring")
        ring.create(path, CAP, max_frame=CAP, start_position=start).close()
        teth = ring.Reader(path, "t", tethered=True, max_frames=7)
        unt = ring.Reader(path, "u", tethered=False, max_frames=5)
        prod = ring.Producer(path, frag_timeout=0.0)
        written, t_msgs, u_msgs = [], [], []
        ta, ua = ring.Assembler(), ring.Assembler()
        u_segments = [[]]
        counter = seed
        refused = 0
        for op, n in ops:
            if op == "w":
                counter += 1
                payload = counter.to_bytes(8, "little") * (n // 8) + b"\x5a" * (n % 8)
                r = prod.write(payload)
                if r == WriteStatus.OK:
                    written.append(payload)
                else:
                    refused += 1
            elif op == "t":
                _read(teth, n, t_msgs, ta)
            else:
                try:
                    before = len(u_msgs)
                    _read(unt, n, u_msgs, ua)
                    u_segments[-1].extend(u_msgs[before:])
                except ring.Lapped:
                    unt.resume_oldest()
                    ua = ring.Assembler()
                    u_segments.append([])
        prod.poll()
        _read(teth, 10**9, t_msgs, ta)
        data = [bytes(m.payload) for m in t_msgs if m.type == FrameType.DATA]
        assert data == written
        drops = [orjson.loads(m.payload) for m in t_msgs if m.type == FrameType.CONTROL]
        assert sum(r["count"] for r in drops) == refused
        seqs = [m.seq for m in t_msgs]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        # Untethered: each segment between laps is a contiguous run of the
        # tethered reader's messages.
        index = {m.seq: i for i, m in enumerate(t_msgs)}
        for seg in u_segments:
            if not seg:
                continue
            i0 = index[seg[0].seq]
            assert [bytes(m.payload) for m in seg] == [bytes(m.payload) for m in t_msgs[i0:i0 + len(seg)]]
        prod.close()
        teth.close()
        unt.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
