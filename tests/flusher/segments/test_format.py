"""Segment format, recovery of damaged segments, index, compression, reader, CLI.

No ring here: segments are built from frames made with ring.frame.encode.
"""
from __future__ import annotations

import json
import logging
import os
import struct

import numpy as np
import pytest

import flusher_helpers as H  # noqa: E402

from flusher.segments import tools as cli  # noqa: E402
from flusher.segments.compress import compress_segment, compress_tree  # noqa: E402
from flusher.segments.index import index_path_for, load_index  # noqa: E402
from flusher.segments.read import Event, metadata, read  # noqa: E402
from flusher.segments.recovery import recover_open  # noqa: E402
from flusher.segments.names import UnsafePath, list_segments  # noqa: E402
from flusher.segments.format import (FILE_HEADER, NotASegment, SegmentHeader, TruncatedSegment, UnsupportedVersion, scan)  # noqa: E402
from common.errors import CorruptSegment, SegmentError  # noqa: E402
from ring.frame import FrameFlags, FrameType, encode  # noqa: E402


def _payloads(n, seed=1):
    return [H.payload(i, seed) for i in range(n)]


def _open_segment(tmp_path, n=50):
    frames = H.frames_of(_payloads(n))
    path, _ = H.write_segment(str(tmp_path), frames, close=False)
    return path, frames


# -- format ------------------------------------------------------------------------
def test_header_roundtrip_and_layout():
    h = SegmentHeader("binance", 7, "host-a", bytes(range(16)), H.BASE_NS, 42)
    raw = h.encode()
    assert len(raw) == FILE_HEADER == 256
    assert raw[:8] == b"CAPSEG\r\n"
    assert struct.unpack_from("<HHI", raw, 8) == (1, 256, 7)
    assert raw[16:32] == bytes(range(16))
    assert struct.unpack_from("<qQ", raw, 32) == (H.BASE_NS, 42)
    assert raw[48:55] == b"binance" and raw[80:86] == b"host-a"
    assert SegmentHeader.decode(raw) == h


def test_records_are_ring_frames_written_through(tmp_path):
    frames = H.frames_of(_payloads(20))
    path, _ = H.write_segment(str(tmp_path), frames)
    data = open(path, "rb").read()
    assert data[FILE_HEADER:] == b"".join(frames)
    assert path.endswith(".seg") and os.path.basename(os.path.dirname(path)) == "2027-01-15"
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == "0o700"
    res = scan(path)
    assert res.records == 20 and res.problem is None and res.first_seq == 0 and res.last_seq == 19


# -- bad input: typed errors naming file and offset ---------------------------------------
def test_reader_rejects_non_segment(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_bytes(b"hello, this is not a segment file at all" * 10)
    with pytest.raises(NotASegment) as ei:
        list(read(str(p)))
    assert ei.value.path == str(p) and ei.value.offset == 0
    assert str(p) in str(ei.value)


def test_reader_rejects_truncated_header(tmp_path):
    frames = H.frames_of(_payloads(3))
    path, _ = H.write_segment(str(tmp_path), frames)
    bad = tmp_path / "x.seg"
    bad.write_bytes(open(path, "rb").read()[:100])
    with pytest.raises(TruncatedSegment) as ei:
        list(read(str(bad)))
    assert ei.value.path == str(bad) and ei.value.offset == 100
    assert isinstance(ei.value, SegmentError)


def test_reader_rejects_unknown_version(tmp_path):
    frames = H.frames_of(_payloads(3))
    path, _ = H.write_segment(str(tmp_path), frames)
    raw = bytearray(open(path, "rb").read())
    struct.pack_into("<H", raw, 8, 99)
    bad = tmp_path / "v99.seg"
    bad.write_bytes(bytes(raw))
    with pytest.raises(UnsupportedVersion) as ei:
        list(read(str(bad)))
    assert ei.value.offset == 8 and ei.value.version == 99 and ei.value.path == str(bad)


def test_reader_rejects_corrupt_header_and_record(tmp_path):
    frames = H.frames_of(_payloads(10))
    path, _ = H.write_segment(str(tmp_path), frames)
    raw = bytearray(open(path, "rb").read())
    raw[60] ^= 0x01                        # inside the host/venue area: header CRC
    bad = tmp_path / "hdr.seg"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CorruptSegment) as ei:
        list(read(str(bad)))
    assert ei.value.offset == 252
    raw[60] ^= 0x01
    rec5 = FILE_HEADER + sum(len(f) for f in frames[:5])
    raw[rec5 + 40] ^= 0x10                 # payload of record 5: CRC
    bad.write_bytes(bytes(raw))
    with pytest.raises(CorruptSegment) as ei:
        list(read(str(bad)))
    assert ei.value.offset == rec5 and "CRC" in ei.value.reason
    # a closed segment cut inside a record
    bad.write_bytes(bytes(raw[:rec5 + 10]))
    with pytest.raises(TruncatedSegment) as ei:
        list(read(str(bad)))
    assert ei.value.offset == rec5 - len(frames[4]) or ei.value.offset <= rec5


# -- torn tails and corruption ------------------------------------------------------------
def _damage(path, frames, how):
    size = os.path.getsize(path)
    last = FILE_HEADER + sum(len(f) for f in frames[:-1])
    with open(path, "r+b") as f:
        if how == "truncate_mid_record":
            f.truncate(last + len(frames[-1]) // 2)
        elif how == "zero_last_4k":
            f.seek(size - 4096)
            f.write(b"\0" * 4096)
        elif how == "flip_last_record":
            f.seek(last + 35)
            b = f.read(1)
            f.seek(last + 35)
            f.write(bytes([b[0] ^ 0xFF]))
    return last


@pytest.mark.parametrize("how", ["truncate_mid_record", "zero_last_4k", "flip_last_record"])
def test_torn_tail_is_truncated_only(tmp_path, how, capsys):
    path, frames = _open_segment(tmp_path, n=120)
    last = _damage(path, frames, how)
    # verify says: torn tail (not corruption) in an open segment
    assert cli.main(["verify", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "torn_tail" in out and "corrupt:" not in out
    outcome, res = recover_open(path, index_every=8)
    assert outcome == "closed"
    final = path[: -len(".open")]
    assert os.path.exists(final) and not os.path.exists(path)
    size = os.path.getsize(final)
    # Everything before the damaged region is kept: no more than the tail goes.
    keep = FILE_HEADER + sum(len(f) for f in frames)
    if how == "zero_last_4k":
        keep_min = keep - 4096 - max(len(f) for f in frames)
        assert keep_min <= size <= keep - 4096 + 1
    else:
        assert size == last
    assert open(final, "rb").read()[FILE_HEADER:] == b"".join(frames)[: size - FILE_HEADER]
    got = [f.payload for f in read(str(tmp_path))]
    assert got == _payloads(120)[: len(got)] and len(got) >= res.records
    assert cli.main(["verify", str(tmp_path)]) == 0


def test_bit_flip_mid_file_keeps_the_valid_records(tmp_path, caplog, capsys):
    path, frames = _open_segment(tmp_path, n=120)
    mid = FILE_HEADER + sum(len(f) for f in frames[:40])
    with open(path, "r+b") as f:
        f.seek(mid + 36)
        b = f.read(1)
        f.seek(mid + 36)
        f.write(bytes([b[0] ^ 0x04]))
    assert cli.main(["verify", path]) == 1
    out = capsys.readouterr().out
    assert f"corrupt: {path} at offset {mid}" in out
    seen = []
    with caplog.at_level(logging.ERROR, logger="capture.flusher"):
        outcome, _ = recover_open(path, on_hole=lambda *a: seen.append(a))
    assert outcome == "repaired"
    assert not os.path.exists(path + ".corrupt") and not os.path.exists(path)
    assert seen and seen[0][1].offset == mid and (seen[0][1].first_seq, seen[0][1].last_seq) == (40, 40)
    assert any(getattr(r, "event", None) == "segment_damaged" for r in caplog.records)
    # the segment keeps the 119 good records and names the lost one
    assert [f.payload for f in read(str(tmp_path)) if f.type == FrameType.DATA] == \
        [p for i, p in enumerate(_payloads(120)) if i != 40]
    assert cli.main(["verify", str(tmp_path)]) == 0
    assert "gap_record" in capsys.readouterr().out


def test_bad_header_moves_the_segment_aside(tmp_path, caplog, capsys):
    path, frames = _open_segment(tmp_path, n=20)
    with open(path, "r+b") as f:
        f.seek(20)
        f.write(b"\xff\xff")
    seen = []
    with caplog.at_level(logging.ERROR, logger="capture.flusher"):
        outcome, _ = recover_open(path, on_corrupt=lambda *a: seen.append(a))
    assert outcome == "corrupt"
    assert os.path.exists(path + ".corrupt") and not os.path.exists(path)
    assert seen and seen[0][1] == 252
    assert any(getattr(r, "event", None) == "segment_corrupt" and r.kv["moved_to"] == path + ".corrupt"
               for r in caplog.records)
    # the directory's verify still fails loudly because of the file set aside
    assert cli.main(["verify", str(tmp_path)]) == 1
    assert "corrupt_file" in capsys.readouterr().out


def test_header_only_open_segment_is_removed(tmp_path):
    path, _ = H.write_segment(str(tmp_path), [], close=False)
    assert recover_open(path)[0] == "removed"
    assert not os.path.exists(path)


def test_symlink_below_data_dir_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(elsewhere, root / "test")
    with pytest.raises(UnsafePath):
        H.write_segment(str(root), H.frames_of(_payloads(2)))
    assert os.listdir(elsewhere) == []


# -- index, seeking, compression ----------------------------------------------------------
def test_index_and_seek_by_time_and_sequence(tmp_path):
    frames = H.frames_of(_payloads(500), first_seq=1000, step_ns=1_000_000)
    path, _ = H.write_segment(str(tmp_path), frames, index_every=16)
    idx = load_index(index_path_for(path))
    assert idx is not None and idx.records == 500 and idx.first_seq == 1000 and idx.last_seq == 1499
    assert idx.ts_monotonic and len(idx.seq) == 32
    assert np.array_equal(idx.seq, np.arange(1000, 1500, 16))
    off = idx.offset_for_seq(1100)
    assert off == FILE_HEADER + sum(len(f) for f in frames[:96])
    got = [f.seq for f in read(str(tmp_path), first_seq=1100, last_seq=1105)]
    assert got == list(range(1100, 1106))
    t = H.BASE_NS + 250 * 1_000_000
    got = list(read(str(tmp_path), start=t, end=t + 2_000_000))
    assert [f.seq for f in got] == [1250, 1251, 1252]
    meta = metadata(str(tmp_path), start=t)
    assert meta.frames["seq"][0] == 1250 and len(meta.frames) == 250
    assert meta.frames["offset"][0] == FILE_HEADER + sum(len(f) for f in frames[:250])


def test_compressed_segments_read_the_same(tmp_path, capsys):
    d = str(tmp_path)
    a, _ = H.write_segment(d, H.frames_of(_payloads(300)), created_ns=H.BASE_NS)
    frames_b = H.frames_of([H.payload(i, 1) for i in range(300, 600)], first_seq=300,
                           ts0=H.BASE_NS + 3600 * 10**9)
    b, _ = H.write_segment(d, frames_b, created_ns=H.BASE_NS + 3600 * 10**9)
    before = [f for f in read(d)]
    z = compress_segment(a)
    assert z.endswith(".seg.zst") and not os.path.exists(a)
    assert oct(os.stat(z).st_mode & 0o777) == "0o600"
    assert compress_tree(d) == [b[:-4] + ".seg.zst"]
    assert list_segments(d) == [z, b[:-4] + ".seg.zst"]
    assert [f for f in read(d)] == before
    assert [f.seq for f in read(d, first_seq=450, last_seq=452)] == [450, 451, 452]
    assert cli.main(["verify", d]) == 0
    capsys.readouterr()


# -- fragments ----------------------------------------------------------------------------
def _chain(first_seq, parts, ts, orig_type=1, orig_flags=0, aborted=False):
    out = []
    for k, p in enumerate(parts):
        if k == 0:
            t, fl = FrameType.FRAG_BEGIN, (orig_flags & 0xF) | (orig_type << 4)
        elif k == len(parts) - 1:
            t, fl = FrameType.FRAG_END, FrameFlags.ABORTED if aborted else 0
        else:
            t, fl = FrameType.FRAG_MIDDLE, 0
        out.append(encode(p, first_seq + k, ts, t, fl))
    return out


def test_fragments_reassembled_across_segments_and_aborted_reported(tmp_path):
    d = str(tmp_path)
    ts = H.BASE_NS
    # a chain that crosses the segment boundary: BEGIN, MIDDLE | END
    seg1 = [encode(b"a", 0, ts)] + _chain(1, [b"x" * 10, b"y" * 10, b""], ts + 1)[:2]
    seg2 = [encode(b"z" * 5, 3, ts + 1, FrameType.FRAG_END)]
    seg2 += _chain(4, [b"p", b"q", b""], ts + 2, aborted=True)
    seg2 += [encode(b"b", 7, ts + 3, FrameType.CONTROL)]
    seg2 += _chain(8, [b"B1", b"B2"], ts + 4, orig_flags=int(FrameFlags.BINARY))
    H.write_segment(d, seg1, created_ns=ts)
    H.write_segment(d, seg2, created_ns=ts + 10**9)
    events: list[Event] = []
    got = list(read(d, on_event=events.append))
    assert [(f.seq, f.type, f.payload, f.flags) for f in got] == [
        (0, 1, b"a", 0), (1, 1, b"x" * 10 + b"y" * 10 + b"z" * 5, 0), (7, 2, b"b", 0),
        (8, 1, b"B1B2", int(FrameFlags.BINARY))]
    assert [(e.kind, e.seq) for e in events] == [("aborted", 4)]


# -- CLI ----------------------------------------------------------------------------------
def test_cat_stats_verify(tmp_path, capsys):
    d = str(tmp_path)
    drop = b'{"kind":"drop","count":3,"bytes":300,"first_ns":1,"last_ns":2,"reasons":{"ring_full":3}}'
    frames = H.frames_of([b'{"a":1}', b'{"a":2}'])
    frames.append(encode(drop, 2, H.BASE_NS + 5, FrameType.CONTROL))
    H.write_segment(d, frames, created_ns=H.BASE_NS)
    # a second segment after a hole in the sequence
    H.write_segment(d, [encode(b'{"a":3}', 10, H.BASE_NS + 10**9)], created_ns=H.BASE_NS + 10**9)
    assert cli.main(["cat", d]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["seq"], x["type"], x.get("msg")) for x in lines] == [
        (0, "data", {"a": 1}), (1, "data", {"a": 2}), (2, "control", json.loads(drop)), (10, "data", {"a": 3})]
    assert lines[0]["ts"] == H.BASE_NS and lines[0]["time"].startswith("2027-01-15T08:00:00")
    # no record explains the hole 3..9: verify fails (drop records name frames that never
    # had a sequence number)
    assert cli.main(["verify", d]) == 1
    out = capsys.readouterr().out
    assert "ERROR gap" in out and "sequences 3..9 missing" in out and "receiver dropped 3 frames" in out
    assert cli.main(["stats", "--json", d]) == 1
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(r["frames"], r["gaps"], r["drop_records"]) for r in rows] == [(3, 0, 1), (1, 1, 0)]
    assert cli.main(["verify", str(tmp_path / "missing")]) == 2


def test_open_segment_read_while_written_stops_at_incomplete_record(tmp_path):
    frames = H.frames_of(_payloads(30))
    path, _ = H.write_segment(str(tmp_path), frames, close=False)
    with open(path, "r+b") as f:           # a record half written: header there, payload not yet
        f.seek(0, 2)
        nxt = encode(b"z" * 100, 30, H.BASE_NS)
        f.write(nxt[:32] + b"\0" * 40)
    assert [f.seq for f in read(path)] == list(range(30))
    # the same bytes in a closed segment are an error naming the offset
    closed = str(tmp_path / "closed.seg")
    os.rename(path, closed)
    with pytest.raises(SegmentError) as ei:
        list(read(closed))
    assert ei.value.offset == FILE_HEADER + sum(len(f) for f in frames)


# -- property: recovery never cuts more than the torn tail ---------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(0, 700), min_size=1, max_size=40), cut=st.floats(0, 1),
       garbage=st.sampled_from(["none", "zeros", "ones"]))
def test_recovery_keeps_every_complete_record(tmp_path_factory, sizes, cut, garbage):
    d = str(tmp_path_factory.mktemp("prop"))
    frames = H.frames_of([bytes([1 + i % 250]) * n for i, n in enumerate(sizes)])
    path, _ = H.write_segment(d, frames, close=False)
    total = os.path.getsize(path)
    at = FILE_HEADER + int(cut * (total - FILE_HEADER))
    with open(path, "r+b") as f:
        f.truncate(at)
        if garbage != "none":
            f.seek(at)
            f.write((b"\0" if garbage == "zeros" else b"\xff") * 64)
    starts = np.cumsum([FILE_HEADER] + [len(f) for f in frames])[:-1]
    padded_end = starts + np.array([len(f) for f in frames])
    exact_end = starts + 32 + np.array(sizes)
    # A record is whole when its bytes are; its padding is not covered by the CRC.
    whole = padded_end <= at if garbage == "none" else exact_end <= at
    count = int(np.argmin(whole)) if not whole.all() else len(frames)
    keep = int(padded_end[count - 1]) if count else FILE_HEADER
    outcome, res = recover_open(path)
    if count == 0:
        assert outcome == "removed"
        return
    assert outcome == "closed" and (res.problem is None or res.problem.kind == "torn")
    final = path[: -len(".open")]
    assert os.path.getsize(final) == keep
    assert [f.payload for f in read(final)] == [bytes([1 + i % 250]) * n for i, n in enumerate(sizes)][:count]


def test_receive_time_stepping_back_disables_time_seeks_not_results(tmp_path):
    ts = [H.BASE_NS + k * 10**6 for k in range(100)]
    ts[60:] = [t - 50 * 10**6 for t in ts[60:]]            # the clock stepped back 50 ms
    frames = [encode(H.payload(k), k, t) for k, t in enumerate(ts)]
    path, _ = H.write_segment(str(tmp_path), frames, index_every=8)
    idx = load_index(index_path_for(path))
    assert not idx.ts_monotonic and idx.min_ts == min(ts) and idx.max_ts == max(ts)
    t = H.BASE_NS + 30 * 10**6
    want = [k for k in range(100) if ts[k] >= t]
    assert [f.seq for f in read(path, start=t)] == want


def test_crash_during_compression_leaves_a_readable_tree(tmp_path, capsys):
    d = str(tmp_path)
    path, _ = H.write_segment(d, H.frames_of(_payloads(100)))
    want = list(read(d))
    z = compress_segment(path)
    # a crash after the .zst rename but before the .seg unlink: both exist, plus a temp file
    H.write_segment(d, H.frames_of(_payloads(100)))
    open(z + ".tmp", "wb").write(b"partial")
    assert list_segments(d) == [path]              # the .seg is preferred
    assert list(read(d)) == want
    assert compress_tree(d) == []                  # duplicate and temp file removed
    assert list_segments(d) == [z] and not os.path.exists(z + ".tmp")
    assert list(read(d)) == want
    # a damaged compressed segment is corruption
    raw = bytearray(open(z, "rb").read())
    raw[len(raw) // 2] ^= 0xFF
    open(z, "wb").write(bytes(raw))
    assert cli.main(["verify", d]) == 1
    assert "ERROR" in capsys.readouterr().out
