"""Reading segments back: frames with fragments reassembled, and a numpy table of metadata.

::

    from flusher.segments.read import read, metadata
    for f in read("data/binance", start="2026-11-22T10:00Z", end=None, venue="binance"):
        f.seq, f.ts_ns, f.type, f.payload

``read`` accepts a segment file in any form (``.seg``, ``.seg.open``,
``.seg.zst``) or a directory (searched recursively, segments in time order).
Every record is checked (CRC, sequence continuity); a problem raises a
:class:`~common.errors.SegmentError` subclass naming the file and byte offset.
An open segment being written may end in an incomplete record: reading it
stops there quietly.

A fragment chain (FRAG_BEGIN, FRAG_MIDDLE..., FRAG_END) is yielded as one
frame with the chain's first sequence, its receive time, and the type and
flags carried in FRAG_BEGIN's flags byte.  A chain closed by an ABORTED
FRAG_END is not data: it is reported to ``on_event`` (default: a warning in
the log) as an :class:`Event` and not yielded.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
from typing import Callable, Iterator, NamedTuple

import numpy as np

from flusher.segments.index import index_path_for, load_index
from flusher.segments.names import SUFFIX_OPEN, list_segments
from flusher.segments.format import FILE_HEADER, SegmentHeader, gap_range, iter_stream_records, open_segment_stream
from common.errors import SegmentError
from common.log import event as log_event
from ring.frame import FrameFlags, FrameType

log = logging.getLogger("capture.flusher.read")

_BEGIN, _MIDDLE, _END = int(FrameType.FRAG_BEGIN), int(FrameType.FRAG_MIDDLE), int(FrameType.FRAG_END)
_ABORTED = int(FrameFlags.ABORTED)
_CONTROL = int(FrameType.CONTROL)

TimeLike = int | float | str | _dt.datetime | None


class Frame(NamedTuple):
    seq: int
    ts_ns: int
    type: int
    payload: bytes
    flags: int = 0
    conn: int = 0


class Event(NamedTuple):
    """Something a reader should know that is not a frame.

    kind: "aborted" (a fragmented message the receiver dropped),
          "broken_chain" (a chain interrupted by another record or a gap),
          "orphan_fragment" (a middle/end without its beginning).
    """
    kind: str
    seq: int
    ts_ns: int
    path: str
    offset: int
    detail: str = ""


def to_ns(t: TimeLike) -> int | None:
    """ns since the epoch from an int (ns), a float (seconds), an ISO string, a string
    of digits (ns, as the command line gives it) or a datetime.

    Raises:
        ValueError: a string that is neither digits nor ISO-8601 (the message names it).
    """
    if t is None:
        return None
    if isinstance(t, bool):
        raise TypeError("time must be ns, seconds, ISO text or datetime")
    if isinstance(t, int):
        return t
    if isinstance(t, float):
        return int(t * 1e9)
    if isinstance(t, str):
        s = t.strip()
        if s.isdigit():
            return int(s)
        if s.endswith("Z") or s.endswith("z"):
            s = s[:-1] + "+00:00"
        try:
            t = _dt.datetime.fromisoformat(s)
        except ValueError:
            raise ValueError(f"not a time: {t!r} (ns since the epoch or ISO-8601, "
                             f"e.g. 2026-11-22T10:00Z)") from None
    if isinstance(t, _dt.datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.timezone.utc)
        delta = t - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
        return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    raise TypeError(f"cannot turn {t!r} into a time")


def segment_paths(path_or_dir: str, venue: str | None = None, shard: int | None = None) -> list[str]:
    """The segment files a path names: itself, or every segment under a directory."""
    if os.path.isdir(path_or_dir):
        return list_segments(path_or_dir, venue=venue, shard=shard)
    if not os.path.exists(path_or_dir):
        raise FileNotFoundError(path_or_dir)
    return [path_or_dir]


def records(path: str, *, start_seq: int | None = None, start_ts: int | None = None,
            header_out: list | None = None, from_offset: int | None = None,
            header: SegmentHeader | None = None) -> Iterator[tuple[int, tuple, bytes]]:
    """Raw records of one segment: (offset, header tuple, payload).

    The header tuple is (size, seq_lo, seq, ts_ns, type, flags, conn, crc).
    With start_seq/start_ts, uses the index (if any) to skip ahead; records
    before the requested point may still be yielded (the caller filters).
    ``from_offset`` starts at that record offset instead (a reader going on
    past a corrupt region; see flusher/segments/walk.py).  ``header``: the
    file's own header is damaged and this one was rebuilt from checks
    (flusher/segments/salvage.py); the file's is then not read.
    """
    with open_segment_stream(path) as f:
        raw = f.read(FILE_HEADER)
        hdr = header if header is not None else SegmentHeader.decode(raw, path)
        if header_out is not None:
            header_out.append(hdr)
        base = FILE_HEADER
        if from_offset is not None:
            base = max(FILE_HEADER, from_offset)
        elif start_seq is not None or start_ts is not None:
            idx = load_index(index_path_for(path))
            if idx is not None:
                cands = [FILE_HEADER]
                if start_seq is not None:
                    cands.append(idx.offset_for_seq(start_seq) or FILE_HEADER)
                if start_ts is not None:
                    cands.append(idx.offset_for_time(start_ts) or FILE_HEADER)
                base = max(cands)
        if base > FILE_HEADER:
            _skip(f, base - FILE_HEADER)
        yield from iter_stream_records(f, path, tolerate_tail=path.endswith(SUFFIX_OPEN), base=base)


def _skip(f, n: int) -> None:
    try:
        f.seek(n, os.SEEK_CUR)
        return
    except (OSError, ValueError, AttributeError):
        pass
    while n > 0:          # a decompressing stream: read and drop
        data = f.read(min(n, 1 << 20))
        if not data:
            return
        n -= len(data)


def _skip_segment(path: str, start: int | None, end: int | None,
                  first_seq: int | None, last_seq: int | None) -> bool:
    if start is None and end is None and first_seq is None and last_seq is None:
        return False
    idx = load_index(index_path_for(path))
    if idx is None or idx.records == 0:
        return False
    if start is not None and idx.max_ts < start:
        return True
    if end is not None and idx.min_ts > end:
        return True
    if first_seq is not None and idx.last_seq < first_seq:
        return True
    if last_seq is not None and idx.first_seq > last_seq:
        return True
    return False


def read(path_or_dir: str, start: TimeLike = None, end: TimeLike = None, venue: str | None = None, *,
         shard: int | None = None, first_seq: int | None = None, last_seq: int | None = None,
         on_event: Callable[[Event], None] | None = None) -> Iterator[Frame]:
    """Frames from segments, oldest first, fragments reassembled.

    Args:
        path_or_dir: a segment file or a directory holding segments.
        start, end: receive-time bounds, inclusive (ns int, seconds float,
            ISO-8601 text or datetime; naive means UTC).
        venue, shard: only segments of this venue / shard (directories only).
        first_seq, last_seq: sequence bounds, inclusive.
        on_event: called with an :class:`Event` for aborted or broken chains.

    Raises:
        SegmentError: NotASegment, TruncatedSegment, UnsupportedVersion,
            CorruptSegment - each with ``path`` and ``offset``.
    """
    lo, hi = to_ns(start), to_ns(end)
    report = on_event or _log_event
    chain: list | None = None      # [seq, ts, type, flags, conn, [payloads], path, offset]
    expect_seq: int | None = None
    seeking = True                 # orphans right after a skip/seek are expected, not news

    def keep(seq: int, ts: int) -> bool:
        return ((lo is None or ts >= lo) and (hi is None or ts <= hi)
                and (first_seq is None or seq >= first_seq) and (last_seq is None or seq <= last_seq))

    for path in segment_paths(path_or_dir, venue, shard):
        if _skip_segment(path, lo, hi, first_seq, last_seq):
            seeking = True
            continue
        hdrs: list = []
        for off, rec, payload in records(path, start_seq=first_seq, start_ts=lo, header_out=hdrs):
            _size, _lo, seq, ts, typ, flags, conn, _crc = rec
            if expect_seq is not None and seq != expect_seq:
                # A jump: our own seek (filters), a gap between segments, or another ring.
                filtering = first_seq is not None or lo is not None
                if chain is not None and not filtering:
                    report(Event("broken_chain", chain[0], chain[1], chain[6], chain[7],
                                 f"chain interrupted by a gap before sequence {seq}"))
                chain = None
                seeking = seeking or filtering
            covered = gap_range(typ, seq, payload) if typ == _CONTROL else None
            expect_seq = (seq if covered is None else covered) + 1     # a gap record covers a range
            if typ == _BEGIN:
                if chain is not None:
                    report(Event("broken_chain", chain[0], chain[1], chain[6], chain[7],
                                 "a new chain began before the end of this one"))
                chain = [seq, ts, (flags >> 4) & 0x0F, flags & 0x0F, conn, [payload], path, off]
                continue
            if typ == _MIDDLE or typ == _END:
                if chain is None:
                    if not seeking:
                        report(Event("orphan_fragment", seq, ts, path, off,
                                     "fragment without its beginning"))
                    continue
                if typ == _MIDDLE:
                    chain[5].append(payload)
                    continue
                c, chain = chain, None
                if flags & _ABORTED:
                    if keep(c[0], c[1]):
                        report(Event("aborted", c[0], c[1], c[6], c[7], "fragmented message dropped "
                                     f"by the receiver (sequences {c[0]}..{seq})"))
                    continue
                c[5].append(payload)
                if keep(c[0], c[1]):
                    yield Frame(c[0], c[1], c[2] or int(FrameType.DATA), b"".join(c[5]), c[3], c[4])
                continue
            seeking = False
            if chain is not None:
                report(Event("broken_chain", chain[0], chain[1], chain[6], chain[7],
                             f"record {seq} of type {typ} inside a fragment chain"))
                chain = None
            if keep(seq, ts):
                yield Frame(seq, ts, typ, payload, flags, conn)
            elif last_seq is not None and seq > last_seq:
                chain = None
                break                 # sequences only grow inside a segment
            elif hi is not None and ts > hi and _monotonic(path):
                chain = None
                break
    if chain is not None and keep(chain[0], chain[1]):
        report(Event("broken_chain", chain[0], chain[1], chain[6], chain[7],
                     "the data ends inside a fragment chain"))


_mono_cache: dict[str, bool] = {}


def _monotonic(path: str) -> bool:
    v = _mono_cache.get(path)
    if v is None:
        idx = load_index(index_path_for(path))
        v = bool(idx and idx.ts_monotonic)
        if len(_mono_cache) > 1024:
            _mono_cache.clear()
        _mono_cache[path] = v
    return v


def _log_event(ev: Event) -> None:
    log_event(log, ev.kind, logging.WARNING, path=ev.path, offset=ev.offset, seq=ev.seq, detail=ev.detail)


META_DTYPE = np.dtype([("seq", "<u8"), ("ts", "<i8"), ("type", "u1"), ("flags", "u1"),
                       ("conn", "<u2"), ("length", "<u4"), ("file", "<u4"), ("offset", "<u8")])


class FrameTable(NamedTuple):
    """Metadata of every record (fragments not reassembled): ``frames`` is a
    structured array (seq, ts, type, flags, conn, length, file, offset) where
    ``file`` indexes ``files``."""
    files: list[str]
    frames: np.ndarray


def metadata(path_or_dir: str, start: TimeLike = None, end: TimeLike = None,
             venue: str | None = None, *, shard: int | None = None) -> FrameTable:
    """A numpy table of record metadata for analysis (see :class:`FrameTable`)."""
    lo, hi = to_ns(start), to_ns(end)
    files = segment_paths(path_or_dir, venue, shard)
    parts = []
    for i, path in enumerate(files):
        if _skip_segment(path, lo, hi, None, None):
            continue
        rows = [(rec[2], rec[3], rec[4], rec[5], rec[6], rec[0] - 32, i, off)
                for off, rec, _p in records(path, start_ts=lo)]
        if rows:
            a = np.array(rows, dtype=META_DTYPE)
            if lo is not None:
                a = a[a["ts"] >= lo]
            if hi is not None:
                a = a[a["ts"] <= hi]
            parts.append(a)
    frames = np.concatenate(parts) if parts else np.zeros(0, META_DTYPE)
    return FrameTable(files, frames)


__all__ = ["read", "metadata", "records", "segment_paths", "Frame", "Event", "FrameTable",
           "META_DTYPE", "to_ns", "SegmentError"]
