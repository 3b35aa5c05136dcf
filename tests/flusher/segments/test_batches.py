"""The bulk segment reader gives exactly what the per-record reader gives:
the same records, and on damage the same error at the same offset."""
from __future__ import annotations

import os

import pytest

from common.errors import CorruptSegment, SegmentError
from flusher.segments import batches
from flusher.segments.batches import record_batches
from flusher.segments.format import FILE_HEADER, gap_record
from flusher.segments.read import records
from flusher_helpers import BASE_NS, frames_of, payload, write_segment


def _flat(path, **kw):
    out = []
    for b in record_batches(path, **kw):
        out.extend(zip(b.seq, b.ts, b.type, b.flags, b.conn, b.payload))
    return out


def _slow(path, **kw):
    return [(r[2], r[3], r[4], r[5], r[6], p) for _o, r, p in records(path, **kw)]


def _frames(n, first=0):
    return frames_of([payload(i, 3) for i in range(n)], first_seq=first)


@pytest.fixture
def small_chunks(monkeypatch):
    # Many chunk boundaries in a small file: records cut at every place.
    monkeypatch.setattr(batches, "_CHUNK", 1000)


@pytest.mark.parametrize("chunked", [False, True])
def test_same_records_as_the_per_record_reader(tmp_path, request, chunked):
    if chunked:
        request.getfixturevalue("small_chunks")
    frames = _frames(3000)
    # a gap record standing for 3000..3009, then records from 3010
    frames.append(gap_record(3000, 3009, BASE_NS, reason="test"))
    frames += _frames(50, first=3010)
    path, _ = write_segment(str(tmp_path), frames)
    got = _flat(path)
    assert got == _slow(path)
    assert [g[0] for g in got][-51:] == [3000] + list(range(3010, 3060))
    # from the index, as catch-up reads (records before start_seq may come too)
    tail = _flat(path, start_seq=2500)
    assert tail and tail[0][0] <= 2500 and tail[-1][0] == 3059
    assert tail == _slow(path, start_seq=2500)


@pytest.mark.parametrize("where", ["payload", "size"])
@pytest.mark.parametrize("chunked", [False, True])
def test_damage_raises_what_the_per_record_reader_raises(tmp_path, request, chunked, where):
    if chunked:
        request.getfixturevalue("small_chunks")
    frames = _frames(500)
    path, _ = write_segment(str(tmp_path), frames)
    if where == "payload":            # a flipped byte in a payload in the middle
        at = os.path.getsize(path) // 2
    else:                             # the size field of record 250 (its first byte)
        at = FILE_HEADER + sum(len(f) for f in frames[:250]) + 1
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x40]))
    with pytest.raises(SegmentError) as slow:
        _slow(path)
    got = []
    with pytest.raises(SegmentError) as bulk:
        for b in record_batches(path):
            got.extend(b.seq)
    assert type(bulk.value) is type(slow.value) is CorruptSegment
    assert (bulk.value.path, bulk.value.offset) == (slow.value.path, slow.value.offset)
    # every record before the damage was handed over first
    assert got == list(range(len(got))) and len(got) > 100


def test_open_segment_torn_tail_ends_quietly(tmp_path):
    path, w = write_segment(str(tmp_path), _frames(200), close=False)
    assert path.endswith(".open")
    with open(path, "ab") as f:           # half a record being written
        f.write(_frames(1, first=200)[0][:40])
    assert _flat(path) == _slow(path)
    assert [g[0] for g in _flat(path)] == list(range(200))
