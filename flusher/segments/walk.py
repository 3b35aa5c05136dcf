"""Messages of a recording with where they came from, for the tools that get data out.

``read()`` (flusher/segments/read.py) yields frames; ``cat``, ``export`` and
``replay`` also need to know, for every message, the segment file and offset
it starts at and the file's header (venue, shard, ring identity), and they
must be able to go on past a corrupt record when asked to.  :func:`walk` is
that reader::

    for m in walk("data", venue="kraken", start="2026-11-22T10:00Z"):
        m.seq, m.ts_ns, m.type, m.flags, m.conn, m.payload, m.path, m.offset, m.header

Fragment chains are reassembled by ``ring.assemble.Assembler`` (the one rule
the ring reader and the publisher use too); a chain that does not complete
is reported to ``on_dropped`` and not yielded.  A chain may cross a segment
boundary: the message is attributed to the file and offset of its first
fragment.

Corruption.  A bad record raises the reader's :class:`SegmentError` (file and
offset), unless ``skip_corrupt``: then ``on_skip`` gets a :class:`Skipped`
naming the file, the offset and the reason, and reading resumes at the next
valid record of that file (found the way recovery finds it: a record that
passes every check and whose sequence is above the last good one), or at the
next file when there is none or the file is compressed.  Nothing is skipped
silently: every skip is a callback, and the callers print and count it.

A file whose own header is damaged is read on (with ``skip_corrupt``) only
when every header field can be checked another way
(flusher/segments/salvage.py): the skip then names the header, what was
checked and any sequences lost with it, and resumes at the first valid
record, the messages carrying the rebuilt header.  Otherwise the header's
error is raised, saying which check failed.
"""
from __future__ import annotations

import mmap
import os
from typing import Callable, Iterable, Iterator, NamedTuple

from common.errors import NoData, SegmentError
# _valid_after is recovery's rule for "a valid record follows": the same rule
# decides where a skip resumes, so a skip and `verify` agree on the region.
from flusher.segments.format import FILE_HEADER, SegmentHeader, _valid_after, gap_range
from flusher.segments.index import index_path_for, load_index
from flusher.segments.names import O_CLOEXEC, O_NOFOLLOW
from flusher.segments.salvage import scan_damaged
from flusher.segments.read import (TimeLike, _monotonic, _skip_segment, records, segment_paths,
                                   to_ns)
from ring.assemble import Assembler, Dropped
from ring.frame import FrameType

_BEGIN = int(FrameType.FRAG_BEGIN)
_MIDDLE, _END = int(FrameType.FRAG_MIDDLE), int(FrameType.FRAG_END)
_PADDING = int(FrameType.PADDING)
#: Types up to this one are whole frames (data, control); padding and fragments are above.
_WHOLE = max(int(FrameType.DATA), int(FrameType.CONTROL))
assert _WHOLE < min(_PADDING, _BEGIN, _MIDDLE, _END)
#: ``conn`` of records that belong to the shard rather than to one connection
#: (shard start/stop, drops counted for the whole ring).
SHARD_CONN = 0xFFFF


class Msg(NamedTuple):
    """One whole message and its provenance."""
    seq: int
    ts_ns: int
    type: int
    flags: int
    conn: int
    payload: bytes
    last_seq: int
    path: str
    offset: int
    header: SegmentHeader


class Skipped(NamedTuple):
    """A corrupt region passed over: ``resume`` is the offset reading went on
    from in the same file (None: the rest of the file was left out)."""
    path: str
    offset: int
    reason: str
    resume: int | None

    def __str__(self) -> str:
        then = (f"resuming at offset {self.resume}" if self.resume is not None
                else "the rest of the file is left out")
        return f"{self.path} at offset {self.offset}: {self.reason}; {then}"


def find_paths(path_or_dir: str | Iterable[str], venue: str | None = None,
               shard: int | None = None) -> list[str]:
    """The segment files to read, or a :class:`NoData` error saying there are none."""
    targets = [path_or_dir] if isinstance(path_or_dir, (str, os.PathLike)) else list(path_or_dir)
    out: list[str] = []
    for t in targets:
        t = os.fspath(t)
        if not os.path.exists(t):
            raise NoData(t, "no such file or directory")
        out += segment_paths(t, venue, shard)
    if not out:
        what = " and ".join(x for x in (f"venue {venue}" if venue else "",
                                         f"shard {shard}" if shard is not None else "") if x)
        raise NoData(", ".join(map(os.fspath, targets)),
                     "no segment files" + (f" of {what}" if what else "") + " here")
    return out


def walk(path_or_dir: str | Iterable[str], *, venue: str | None = None, shard: int | None = None,
         start: TimeLike = None, end: TimeLike = None, first_seq: int | None = None,
         last_seq: int | None = None, skip_corrupt: bool = False,
         on_skip: Callable[[Skipped], None] | None = None,
         on_dropped: Callable[[str, Dropped], None] | None = None,
         on_file: Callable[[str, SegmentHeader], None] | None = None,
         paths: list[str] | None = None) -> Iterator[Msg]:
    """Whole messages in file order (per shard: sequence order), with provenance.

    Args:
        path_or_dir: segment files or directories (searched recursively).
        venue, shard: only segments of this venue / shard.
        start, end: receive-time bounds, inclusive (see ``read.to_ns``).
        first_seq, last_seq: sequence bounds, inclusive.
        skip_corrupt: go on past a corrupt record (see the module docstring).
        on_skip: told of every region passed over.
        on_dropped: told of every fragment chain that did not complete.
        on_file: called with (path, header) before the first message of each file.
        paths: the files, when the caller listed them already.

    Raises:
        NoData: no segment files there.
        SegmentError: a bad record (without ``skip_corrupt``) or a bad file header.
    """
    lo, hi = to_ns(start), to_ns(end)
    files = paths if paths is not None else find_paths(path_or_dir, venue, shard)
    filtering = lo is not None or first_seq is not None
    key = None
    asm = Assembler()
    chain_at = (None, 0)                  # (path, offset) of the open chain's first fragment
    chain_hdr: SegmentHeader | None = None

    def report_dropped(path: str, quiet_orphans: bool) -> None:
        for d in asm.dropped:
            if quiet_orphans and d.reason == "fragment without a beginning":
                continue                   # we seeked into the middle of a chain: expected
            if on_dropped is not None:
                on_dropped(path, d)
        asm.dropped.clear()

    for path in files:
        if _skip_segment(path, lo, hi, first_seq, last_seq):
            continue
        resume: int | None = None
        seen_any = False
        # The last good record of this file (sequence, type, payload): where a
        # skip resumes depends on the sequence it covered (see _next_valid).
        good_seq = good_typ = -1
        good_payload = b""
        rebuilt: SegmentHeader | None = None     # the file's header is damaged: see salvage.py
        while True:
            hdrs: list[SegmentHeader] = []
            try:
                it = records(path, start_seq=first_seq, start_ts=lo, header_out=hdrs,
                             from_offset=resume, header=rebuilt)
                for off, rec, payload in it:
                    if not seen_any:
                        seen_any = True
                        hdr = hdrs[0]
                        k = (hdr.venue, hdr.shard, hdr.ring_id)
                        if k != key:      # another shard or ring: no chain continues into it
                            if asm.open_chain_seq is not None and on_dropped is not None:
                                on_dropped(chain_at[0] or path, Dropped(
                                    asm.open_chain_seq, asm.open_chain_seq, 0,
                                    "the data of this ring ends inside a fragment chain"))
                            asm = Assembler()
                            key = k
                        if on_file is not None:
                            on_file(path, hdr)
                    _size, _lo, seq, ts, typ, flags, conn, _crc = rec
                    good_seq, good_typ, good_payload = seq, typ, payload
                    if typ <= _WHOLE and asm.open_chain_seq is None:
                        # The common case, a whole frame outside any chain: what the
                        # assembler would return unchanged, without the call.
                        mts, mseq = ts, seq
                        m = None
                    else:
                        if typ == _PADDING:
                            continue
                        if typ == _BEGIN:
                            chain_at, chain_hdr = (path, off), hdrs[0]
                        m = asm.feed(seq, ts, typ, flags, conn, payload)
                        if asm.dropped:
                            report_dropped(path, filtering)
                        if m is None:
                            continue
                        mts, mseq = m.ts, m.seq
                    if ((lo is None or mts >= lo) and (hi is None or mts <= hi)
                            and (first_seq is None or mseq >= first_seq)
                            and (last_seq is None or mseq <= last_seq)):
                        if m is not None and m.seq != m.last_seq:
                            yield Msg(mseq, mts, m.type or int(FrameType.DATA), m.flags, m.conn,
                                      m.payload, m.last_seq, chain_at[0], chain_at[1],
                                      chain_hdr or hdrs[0])
                        else:
                            yield Msg(mseq, mts, typ, flags, conn, payload, mseq, path, off, hdrs[0])
                    elif last_seq is not None and mseq > last_seq:
                        break                # sequences only grow inside a segment
                    elif hi is not None and mts > hi and _monotonic(path):
                        break
                break
            except SegmentError as exc:
                if not skip_corrupt:
                    raise
                if not hdrs:
                    # A bad header is stepped over only when all it said can
                    # be checked; else its error, with the check that failed.
                    try:
                        res = scan_damaged(path, exc)
                    except SegmentError as why:
                        raise why from exc
                    rebuilt, resume = res.header, res.header_damage.first_off
                    front = res.holes[0] if res.holes and res.holes[0].offset == FILE_HEADER else None
                    lost = (f"; sequences {front.first_seq}..{front.last_seq} lost with it"
                            if front and front.last_seq >= front.first_seq else "")
                    if on_skip is not None:
                        on_skip(Skipped(path, exc.offset, res.header_damage.describe() + lost, resume))
                    continue
                if good_seq < 0:            # nothing good read yet in this file
                    resume = _next_valid(path, exc.offset, hdrs[0].first_seq - 1, FILE_HEADER)
                else:
                    covered = gap_range(good_typ, good_seq, good_payload)
                    resume = _next_valid(path, exc.offset,
                                         good_seq if covered is None else covered, exc.offset)
                asm = Assembler()            # a chain across the bad region cannot be trusted
                if on_skip is not None:
                    on_skip(Skipped(path, exc.offset, exc.reason, resume))
                if resume is None:
                    break
    if asm.open_chain_seq is not None and on_dropped is not None:
        on_dropped(chain_at[0] or "", Dropped(asm.open_chain_seq, asm.open_chain_seq, 0,
                                              "the data ends inside a fragment chain"))


def _next_valid(path: str, offset: int, after_seq: int, hole_start: int) -> int | None:
    """Offset of the first valid record after a bad one at ``offset`` (an
    uncompressed file only: a compressed stream cannot be searched).

    Recovery's rule: a record that passes every check, whose sequence is above
    ``after_seq`` (the last one read) and plausible for a hole starting at
    ``hole_start`` (each lost record took at least 32 bytes of it)."""
    if path.endswith(".zst"):
        return None
    fd = os.open(path, os.O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size <= offset + 8:
            return None
        with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as mm:
            buf = memoryview(mm)
            try:
                return _valid_after(buf, offset + 8, size, after_seq, hole_start)
            finally:
                buf.release()
    finally:
        os.close(fd)


def no_data_in_range(paths: list[str], start: TimeLike, end: TimeLike) -> NoData:
    """The error for a range that holds nothing, saying what the files do hold."""
    lo_all = hi_all = None
    for p in paths:
        idx = load_index(index_path_for(p))
        if idx is None or idx.records == 0:
            continue
        lo_all = idx.min_ts if lo_all is None else min(lo_all, idx.min_ts)
        hi_all = idx.max_ts if hi_all is None else max(hi_all, idx.max_ts)
    from flusher.segments.tools import _iso   # here: tools imports this module (cat)
    asked = f"{_iso(to_ns(start)) if start is not None else 'the beginning'} .. " \
            f"{_iso(to_ns(end)) if end is not None else 'the end'}"
    held = (f"; the files hold {_iso(lo_all)} .. {_iso(hi_all)}" if lo_all is not None else "")
    where = os.path.commonpath(paths) if len(paths) > 1 else paths[0]
    return NoData(where, f"no messages received in {asked}{held}")


__all__ = ["walk", "find_paths", "no_data_in_range", "Msg", "Skipped", "SHARD_CONN"]
