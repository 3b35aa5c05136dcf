"""Recovery of a damaged open segment keeps what is valid: the records before the
damage, the records after it that the frame checks find again, and a gap record
naming what was lost.  Real files, damaged on purpose.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil

import pytest

import flusher_helpers as H

from flusher.segments import recovery
from flusher.segments import tools as cli
from flusher.segments.format import FILE_HEADER, gap_range, scan
from flusher.segments.index import index_path_for, load_index
from flusher.segments.read import read
from flusher.segments.recovery import recover_open
from ring.frame import FrameType, encode

PAGE = 4096


def _open_segment(tmp_path, payloads):
    frames = H.frames_of(payloads)
    path, _ = H.write_segment(str(tmp_path), frames, close=False)
    offs, off = [], FILE_HEADER
    for f in frames:
        offs.append(off)
        off += len(f)
    return path, frames, offs


def _zero(path, at, n=PAGE):
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(b"\0" * n)


def _flip(path, at):
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x10]))


def _touching(offs, frames, lo, hi):
    """Indexes of the records with a byte in [lo, hi)."""
    return [i for i, (o, f) in enumerate(zip(offs, frames)) if o < hi and o + len(f) > lo]


def _gaps(d):
    out = []
    for f in read(d):
        if f.type == FrameType.CONTROL:
            last = gap_range(f.type, f.seq, f.payload)
            if last is not None:
                out.append((f.seq, last, json.loads(f.payload)))
    return out


def test_zeroed_page_mid_segment_costs_only_its_records(tmp_path, caplog, capsys):
    payloads = [H.payload(i, 3) for i in range(600)]
    path, frames, offs = _open_segment(tmp_path, payloads)
    page = (offs[300] // PAGE + 1) * PAGE              # a page boundary in the middle
    _zero(path, page)
    lost = _touching(offs, frames, page, page + PAGE)
    assert lost and lost[0] > 0 and lost[-1] < 599
    # before recovery: verify names the damaged region, and it is an error
    assert cli.main(["verify", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"corrupt: {path} at offset {offs[lost[0]]}" in out
    assert f"sequences {lost[0]}..{lost[-1]} lost" in out
    with caplog.at_level(logging.ERROR, logger="capture.flusher"):
        seen = []
        outcome, res = recover_open(path, index_every=16, on_hole=lambda p, h: seen.append((p, h)))
    assert outcome == "repaired"
    final = path[: -len(".open")]
    assert os.path.exists(final) and not os.path.exists(path)
    assert not [f for f in os.listdir(os.path.dirname(path)) if f.endswith(".tmp") or ".corrupt" in f]
    assert len(seen) == 1 and seen[0][0] == final
    h = seen[0][1]
    assert (h.first_seq, h.last_seq, h.offset, h.end) == (lost[0], lost[-1], offs[lost[0]],
                                                           offs[lost[-1] + 1])
    assert any(getattr(r, "event", None) == "segment_damaged" and r.kv["path"] == path for r in caplog.records)
    # every record outside the damaged page is there, byte for byte, and in order
    got = list(read(str(tmp_path)))
    data = [f for f in got if f.type == FrameType.DATA]
    assert [f.payload for f in data] == [p for i, p in enumerate(payloads) if i not in lost]
    assert [f.seq for f in got] == list(range(lost[0] + 1)) + list(range(lost[-1] + 1, 600))
    # the prefix is the original bytes
    raw = open(final, "rb").read()
    assert raw[FILE_HEADER:offs[lost[0]]] == b"".join(frames[:lost[0]])
    # one gap record names the lost sequences and the damaged bytes
    (first, last, body), = _gaps(str(tmp_path))
    assert (first, last, body["count"]) == (lost[0], lost[-1], len(lost))
    assert body["offset"] == offs[lost[0]] and body["bytes"] == offs[lost[-1] + 1] - offs[lost[0]]
    assert body["segment"] == os.path.basename(path) and body["reason"]
    # the index covers the whole segment, gap included
    idx = load_index(index_path_for(final))
    assert idx is not None and idx.first_seq == 0 and idx.last_seq == 599
    assert [f.seq for f in read(str(tmp_path), first_seq=lost[-1] + 1)][0] == lost[-1] + 1
    # after recovery verify passes: the hole is explained by its record, and reported
    assert cli.main(["verify", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"gap_record: {final}" in out and f"sequences {lost[0]}..{lost[-1]} lost" in out
    assert f"{len(lost)} lost frames named by gap records: ok" in out


def test_one_bit_flip_costs_one_record(tmp_path):
    payloads = [H.payload(i, 4) for i in range(120)]
    path, frames, offs = _open_segment(tmp_path, payloads)
    _flip(path, offs[40] + 36)                        # in record 40's payload: CRC fails
    assert recover_open(path)[0] == "repaired"
    assert [(a, b) for a, b, _ in _gaps(str(tmp_path))] == [(40, 40)]
    assert [f.payload for f in read(str(tmp_path)) if f.type == FrameType.DATA] == \
        payloads[:40] + payloads[41:]


def test_two_damaged_regions_two_gap_records_and_a_torn_tail(tmp_path):
    payloads = [H.payload(i, 5) for i in range(900)]
    path, frames, offs = _open_segment(tmp_path, payloads)
    size = os.path.getsize(path)
    p1 = (offs[200] // PAGE + 1) * PAGE
    p2 = (offs[600] // PAGE + 1) * PAGE
    _zero(path, p1)
    _zero(path, p2)
    with open(path, "r+b") as f:                       # and the last record half written
        f.truncate(offs[-1] + 20)
    l1 = _touching(offs, frames, p1, p1 + PAGE)
    l2 = _touching(offs, frames, p2, p2 + PAGE)
    outcome, res = recover_open(path, index_every=8)
    assert outcome == "repaired" and size > res.file_size
    assert res.tail is not None and res.tail.offset == offs[-1]
    assert [(a, b) for a, b, _ in _gaps(str(tmp_path))] == [(l1[0], l1[-1]), (l2[0], l2[-1])]
    kept = [i for i in range(899) if i not in l1 and i not in l2]
    assert [f.payload for f in read(str(tmp_path)) if f.type == FrameType.DATA] == \
        [payloads[i] for i in kept]
    assert cli.main(["verify", str(tmp_path)]) == 0


def test_damage_right_after_the_header_uses_the_header_first_seq(tmp_path):
    payloads = [H.payload(i, 6) for i in range(100)]
    frames = H.frames_of(payloads, first_seq=1000)
    path, _ = H.write_segment(str(tmp_path), frames, close=False)
    _zero(path, FILE_HEADER, 200)
    outcome, _res = recover_open(path)
    assert outcome == "repaired"
    (first, last, _), = _gaps(str(tmp_path))
    assert first == 1000 and last >= 1000
    seqs = [f.seq for f in read(str(tmp_path))]
    assert seqs[0] == 1000 and seqs[1] == last + 1 and seqs[-1] == 1099


def test_a_frame_inside_a_payload_is_not_taken_for_the_next_record(tmp_path):
    # Record 10 carries a complete, valid frame (sequence 5000) in its payload.
    # After record 10's header is damaged, the resync must not land on it: 5000
    # sequences cannot have been lost in a few hundred bytes.
    inner = encode(b'{"fake":true}', 5000, H.BASE_NS, FrameType.DATA)
    payloads = [H.payload(i, 7) for i in range(30)]
    payloads[10] = b"x" * 16 + inner + b"y" * 40
    path, frames, offs = _open_segment(tmp_path, payloads)
    _flip(path, offs[10] + 2)                          # record 10's size field
    assert recover_open(path)[0] == "repaired"
    assert [(a, b) for a, b, _ in _gaps(str(tmp_path))] == [(10, 10)]
    assert [f.seq for f in read(str(tmp_path))] == list(range(30))
    assert [f.payload for f in read(str(tmp_path))][11:] == payloads[11:]


def test_a_full_disk_during_the_rebuild_leaves_the_damaged_file_for_the_next_start(tmp_path, monkeypatch):
    payloads = [H.payload(i, 8) for i in range(300)]
    path, frames, offs = _open_segment(tmp_path, payloads)
    _zero(path, (offs[150] // PAGE + 1) * PAGE)
    before = open(path, "rb").read()

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(recovery.os, "copy_file_range", full)
    with pytest.raises(OSError) as ei:
        recover_open(path)
    assert ei.value.errno == errno.ENOSPC
    assert open(path, "rb").read() == before
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]
    monkeypatch.undo()
    assert recover_open(path)[0] == "repaired"
    assert len(_gaps(str(tmp_path))) == 1


def test_a_crash_between_rename_and_unlink_is_finished_on_the_next_start(tmp_path):
    payloads = [H.payload(i, 9) for i in range(300)]
    path, frames, offs = _open_segment(tmp_path, payloads)
    _zero(path, (offs[150] // PAGE + 1) * PAGE)
    keep = str(tmp_path / "copy")
    shutil.copy(path, keep)
    assert recover_open(path)[0] == "repaired"
    final = path[: -len(".open")]
    rebuilt = open(final, "rb").read()
    shutil.copy(keep, path)                            # as if the unlink never happened
    os.unlink(keep)
    assert recover_open(path)[0] == "removed"
    assert not os.path.exists(path) and open(final, "rb").read() == rebuilt
    assert cli.main(["verify", str(tmp_path)]) == 0


def test_scan_counts_records_after_a_hole(tmp_path):
    payloads = [H.payload(i, 10) for i in range(200)]
    path, frames, offs = _open_segment(tmp_path, payloads)
    _flip(path, offs[100] + 40)
    res = scan(path)
    assert [(h.first_seq, h.last_seq) for h in res.holes] == [(100, 100)]
    assert res.records == 199 and res.last_seq == 199 and res.tail is None
    assert res.problem.kind == "corrupt" and res.problem.offset == offs[100]


# -- verify: holes no record explains ----------------------------------------------------------
def test_verify_fails_on_a_missing_middle_segment(tmp_path, capsys):
    d = str(tmp_path)
    paths = []
    for k in range(3):
        frames = H.frames_of([H.payload(i, 11) for i in range(10)], first_seq=10 * k,
                             ts0=H.BASE_NS + k * 10**9)
        paths.append(H.write_segment(d, frames, created_ns=H.BASE_NS + k * 10**9)[0])
    assert cli.main(["verify", d]) == 0
    capsys.readouterr()
    os.unlink(paths[1])
    os.unlink(index_path_for(paths[1]))
    assert cli.main(["verify", d]) == 1
    out = capsys.readouterr().out
    assert "ERROR gap" in out and "sequences 10..19 missing" in out and "no record explains" in out


def test_a_symlink_at_the_finished_name_is_refused_not_trusted(tmp_path):
    from flusher.segments.names import UnsafePath
    payloads = [H.payload(i, 12) for i in range(50)]
    path, frames, offs = _open_segment(tmp_path, payloads)
    before = open(path, "rb").read()
    os.symlink(tmp_path / "nowhere", path[: -len(".open")])
    with pytest.raises(UnsafePath):
        recover_open(path)
    assert open(path, "rb").read() == before          # the open segment is not given up
