"""flusher.segments.walk: messages with provenance, chains across files and rings,
going on past corruption (uncompressed and compressed), and NoData."""
from __future__ import annotations

import os

import pytest

import flusher_helpers as H
from common.errors import NoData, SegmentError
from flusher.segments.compress import compress_segment
from flusher.segments.read import read, records
from flusher.segments.walk import find_paths, walk
from ring.frame import FrameFlags, FrameType, encode


def _chain(first_seq: int, parts: list[bytes], ts: int, aborted: bool = False,
           conn: int = 0) -> list[bytes]:
    out = []
    for k, p in enumerate(parts):
        if k == 0:
            t, fl = FrameType.FRAG_BEGIN, int(FrameType.DATA) << 4
        elif k == len(parts) - 1:
            t, fl = FrameType.FRAG_END, int(FrameFlags.ABORTED) if aborted else 0
        else:
            t, fl = FrameType.FRAG_MIDDLE, 0
        out.append(encode(p, first_seq + k, ts, int(t), fl, conn))
    return out


def test_provenance_and_a_chain_across_files(tmp_path):
    d = str(tmp_path)
    ts = H.BASE_NS
    seg1 = [encode(b"a", 0, ts, conn=3)] + _chain(1, [b"x" * 10, b"y" * 10, b"z"], ts + 1, conn=4)[:2]
    seg2 = _chain(1, [b"x" * 10, b"y" * 10, b"z"], ts + 1, conn=4)[2:] + [encode(b"b", 4, ts + 2)]
    p1, _ = H.write_segment(d, seg1, venue="v", shard=1, created_ns=ts)
    p2, _ = H.write_segment(d, seg2, venue="v", shard=1, created_ns=ts + 10**9)
    files: list[str] = []
    got = list(walk(d, on_file=lambda p, h: files.append(p)))
    assert [(m.seq, m.last_seq, m.payload, m.conn) for m in got] == [
        (0, 0, b"a", 3), (1, 3, b"x" * 10 + b"y" * 10 + b"z", 4), (4, 4, b"b", 0)]
    # the chain belongs to where it began
    assert [(m.path, m.offset) for m in got] == [(p1, 256), (p1, 256 + len(seg1[0])), (p2, 256 + len(seg2[0]))]
    assert {m.header.venue for m in got} == {"v"} and {m.header.shard for m in got} == {1}
    assert files == [p1, p2]
    # the same messages read() gives
    assert [(f.seq, f.payload) for f in read(d)] == [(m.seq, m.payload) for m in got]


def test_a_new_ring_drops_an_open_chain_and_says_so(tmp_path):
    d = str(tmp_path)
    ts = H.BASE_NS
    H.write_segment(d, [encode(b"a", 0, ts)] + _chain(1, [b"p", b"q", b"r"], ts)[:2], ring_id=b"A" * 16,
                    created_ns=ts)
    H.write_segment(d, [encode(b"b", 0, ts + 5)], ring_id=b"B" * 16, created_ns=ts + 10**9)
    dropped = []
    got = list(walk(d, on_dropped=lambda p, dr: dropped.append(dr)))
    assert [(m.seq, m.payload, m.header.ring_id) for m in got] == [(0, b"a", b"A" * 16),
                                                                   (0, b"b", b"B" * 16)]
    assert [(dr.first_seq, dr.reason) for dr in dropped] == [
        (1, "the data of this ring ends inside a fragment chain")]


@pytest.mark.parametrize("compressed", [False, True])
def test_skip_corrupt_resumes_after_the_bad_record(tmp_path, compressed):
    d = str(tmp_path)
    frames = H.frames_of([b'{"i":%d}' % i for i in range(20)])
    p, _ = H.write_segment(d, frames)
    off = next(o for o, rec, _ in records(p) if rec[2] == 7)
    with open(p, "r+b") as f:
        f.seek(off + 33)
        f.write(b"#")
    if compressed:
        p = compress_segment(p)
        assert p.endswith(".zst")
    with pytest.raises(SegmentError) as ei:
        list(walk(d))
    assert (ei.value.path, ei.value.offset) == (p, off)
    skips = []
    got = [m.seq for m in walk(d, skip_corrupt=True, on_skip=skips.append)]
    (sk,) = skips
    assert (sk.path, sk.offset) == (p, off) and "CRC" in sk.reason
    if compressed:             # a compressed stream cannot be searched: the rest is left out
        assert got == list(range(7)) and sk.resume is None
        assert "the rest of the file is left out" in str(sk)
    else:
        assert got == [s for s in range(20) if s != 7] and sk.resume == off + len(frames[7])
        assert f"resuming at offset {sk.resume}" in str(sk)


def test_filters_and_no_data(tmp_path):
    d = str(tmp_path / "d")
    os.mkdir(d)
    H.write_segment(d, H.frames_of([b"m%d" % i for i in range(50)], step_ns=1000), index_every=4)
    assert [m.seq for m in walk(d, start=H.BASE_NS + 10_000, end=H.BASE_NS + 12_000)] == [10, 11, 12]
    assert [m.seq for m in walk(d, first_seq=40, last_seq=42)] == [40, 41, 42]
    with pytest.raises(NoData) as ei:
        find_paths(d, venue="other")
    assert "no segment files of venue other" in str(ei.value)
    with pytest.raises(NoData):
        find_paths(str(tmp_path / "missing"))
