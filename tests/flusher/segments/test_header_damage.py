"""A segment whose own file header is damaged keeps its valid records when
every header field can be checked another way (the file name against the
records, the ring identity from a neighbour whose sequences they join), and
is set aside, saying why, when not.  Real files, the header damaged on
purpose in several ways."""
from __future__ import annotations

import json
import logging
import os
import random

import pytest

import flusher_helpers as H

from flusher.segments import tools as cli
from flusher.segments.format import FILE_HEADER, gap_range, read_header
from flusher.segments.read import read
from flusher.segments.recovery import recover_open
from flusher.segments.walk import walk
from common.errors import SegmentError
from ring.frame import FrameType

RING = b"A" * 16
OTHER_RING = b"B" * 16


def _two_segments(tmp_path, *, close_second: bool = False, first_ring: bytes = RING,
                  first_count: int = 100):
    """A closed segment of sequences 0..first_count-1, then one of 100..299
    (open unless close_second), from one ring.  Returns (second's path, its
    frames, their offsets, all payloads)."""
    payloads = [H.payload(i, 7) for i in range(300)]
    frames = H.frames_of(payloads)
    H.write_segment(str(tmp_path), frames[:first_count], ring_id=first_ring)
    second = frames[100:]
    path, _ = H.write_segment(str(tmp_path), second, ring_id=RING, created_ns=H.BASE_NS + 60 * 10**9,
                              close=close_second)
    offs, off = [], FILE_HEADER
    for f in second:
        offs.append(off)
        off += len(f)
    return path, second, offs, payloads


def _damage(path: str, how: str) -> None:
    with open(path, "r+b") as f:
        if how == "zeroed":
            f.write(b"\0" * FILE_HEADER)
        elif how == "random":
            f.write(random.Random(5).randbytes(FILE_HEADER))
        elif how == "crc":            # one field changed: only the header CRC says so
            f.seek(16)
            f.write(OTHER_RING)
        elif how == "page":           # the header and the first records with it
            f.write(b"\0" * 4096)
        else:
            raise AssertionError(how)


def _gaps(root):
    out = []
    for f in read(str(root)):
        if f.type == FrameType.CONTROL:
            last = gap_range(f.type, f.seq, f.payload)
            if last is not None:
                out.append((f.seq, last, json.loads(f.payload)))
    return out


@pytest.mark.parametrize("how", ["zeroed", "random", "crc"])
def test_recovery_keeps_every_record_after_a_damaged_header(tmp_path, how, caplog):
    path, frames, offs, payloads = _two_segments(tmp_path)
    original = open(path, "rb").read()
    _damage(path, how)
    holes = []
    with caplog.at_level(logging.ERROR, logger="capture.flusher"):
        outcome, res = recover_open(path, index_every=16, on_hole=lambda p, h: holes.append(h))
    assert outcome == "repaired" and holes == []
    final = path[: -len(".open")]
    assert os.path.exists(final) and not os.path.exists(path)
    assert not [f for f in os.listdir(os.path.dirname(path)) if ".corrupt" in f or f.endswith(".tmp")]
    msg = next(r.getMessage() for r in caplog.records if "event=segment_header_damaged" in r.getMessage())
    assert path in msg and "records=200" in msg
    # the records, byte for byte, after a header rebuilt from checks: the
    # ring of the neighbour whose sequences they join, never the damaged one
    raw = open(final, "rb").read()
    assert raw[FILE_HEADER:] == original[FILE_HEADER:]
    hdr = read_header(final)
    assert (hdr.ring_id, hdr.venue, hdr.shard, hdr.first_seq, hdr.host) == (RING, "test", 0, 100, "testhost")
    assert [f.payload for f in read(str(tmp_path))] == payloads
    assert cli.main(["verify", "-q", str(tmp_path)]) == 0


def test_records_lost_with_the_header_are_named_by_a_gap_record(tmp_path, caplog):
    path, frames, offs, payloads = _two_segments(tmp_path)
    original = open(path, "rb").read()
    _damage(path, "page")
    lost = [i for i, o in enumerate(offs) if o < 4096]
    assert len(lost) == 3          # the figure docs/segments.md quotes
    keep_from = offs[lost[-1] + 1]
    holes = []
    outcome, _ = recover_open(path, index_every=16, on_hole=lambda p, h: holes.append(h))
    assert outcome == "repaired"
    (h,) = holes
    assert (h.offset, h.end, h.first_seq, h.last_seq) == (FILE_HEADER, keep_from, 100, 100 + lost[-1])
    final = path[: -len(".open")]
    (first, last, body), = _gaps(tmp_path)
    assert (first, last) == (100, 100 + lost[-1])
    assert body["header"].startswith("damaged: ") and body["offset"] == FILE_HEADER
    assert body["bytes"] == keep_from - FILE_HEADER and body["source"] == "recovery"
    data = [f.payload for f in read(str(tmp_path)) if f.type == FrameType.DATA]
    assert data == payloads[:100] + payloads[101 + lost[-1]:]
    raw = open(final, "rb").read()
    gap_len = len(raw) - (len(original) - keep_from) - FILE_HEADER
    assert raw[FILE_HEADER + gap_len:] == original[keep_from:], "the rest byte for byte"
    assert read_header(final).ring_id == RING
    assert cli.main(["verify", "-q", str(tmp_path)]) == 0     # the loss is explained by the record


def test_no_neighbour_to_check_the_ring_against_sets_the_file_aside(tmp_path, caplog):
    frames = H.frames_of([H.payload(i, 7) for i in range(50)])
    path, _ = H.write_segment(str(tmp_path), frames, ring_id=RING, close=False)
    _damage(path, "zeroed")
    seen = []
    with caplog.at_level(logging.ERROR, logger="capture.flusher"):
        outcome, _ = recover_open(path, on_corrupt=lambda *a: seen.append(a))
    assert outcome == "corrupt" and os.path.exists(path + ".corrupt")
    assert "no neighbouring segment" in seen[0][2]
    assert any("event=segment_corrupt" in r.getMessage() and "no neighbouring segment" in r.getMessage()
               for r in caplog.records)


def test_a_neighbour_whose_sequences_do_not_join_confirms_nothing(tmp_path):
    # The segment before ends at 49, this one starts at 100: not the same run
    # of one ring (or a gap nobody recorded), so its ring cannot be checked.
    path, *_ = _two_segments(tmp_path, first_count=50)
    _damage(path, "crc")
    seen = []
    assert recover_open(path, on_corrupt=lambda *a: seen.append(a))[0] == "corrupt"
    assert "no neighbouring segment" in seen[0][2]


def test_the_next_segment_can_confirm_the_ring(tmp_path):
    # The first segment's header is damaged; the one after it starts where
    # its records end.
    payloads = [H.payload(i, 7) for i in range(300)]
    frames = H.frames_of(payloads)
    first, _ = H.write_segment(str(tmp_path), frames[:100], ring_id=RING)
    H.write_segment(str(tmp_path), frames[100:], ring_id=RING, created_ns=H.BASE_NS + 60 * 10**9)
    _damage(first, "random")
    assert cli.main(["verify", "-q", str(tmp_path)]) == 1, "a damaged header is still an error"
    got = [m.payload for m in walk(str(tmp_path), skip_corrupt=True)]
    assert got == payloads


def test_truncated_to_less_than_a_header(tmp_path):
    path, *_ = _two_segments(tmp_path)
    os.truncate(path, 100)
    assert recover_open(path)[0] == "removed", "an open segment cut inside its header held no record"
    (tmp_path / "closed").mkdir()
    closed, *_ = _two_segments(tmp_path / "closed", close_second=True)
    os.truncate(closed, 100)
    c = cli.check_segment(closed)
    assert [f.kind for f in c.findings] == ["bad_header"]
    assert "no record after the header" in c.findings[0].detail
    with pytest.raises(SegmentError, match="no record after the header"):
        list(walk(str(tmp_path / "closed"), skip_corrupt=True))


@pytest.mark.parametrize("how", ["zeroed", "page"])
def test_verify_and_readers_keep_the_records_of_a_closed_segment(tmp_path, how, capsys):
    path, frames, offs, payloads = _two_segments(tmp_path, close_second=True)
    _damage(path, how)
    lost = [i for i, o in enumerate(offs) if o < 4096] if how == "page" else []
    # verify: an error, naming the header and what it checked, and what was lost
    assert cli.main(["verify", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"bad_header: {path}" in out and "whose sequences they join" in out
    if lost:
        assert f"sequences 100..{100 + lost[-1]} lost" in out
    c = cli.check_segment(path)
    assert c.header.ring_id == RING and c.last_seq == 299
    assert c.frames == 200 - len(lost)
    # a reader refuses it unless told to go on, and then says what it passed over
    with pytest.raises(SegmentError):
        list(walk(str(tmp_path)))
    skipped = []
    got = list(walk(str(tmp_path), skip_corrupt=True, on_skip=skipped.append))
    assert [m.payload for m in got] == payloads[:100] + payloads[100 + len(lost):]
    assert all(m.header.ring_id == RING for m in got)
    (sk,) = skipped
    assert sk.path == path and "file header damaged" in sk.reason
    assert sk.resume == (offs[lost[-1] + 1] if lost else FILE_HEADER)
