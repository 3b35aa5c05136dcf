"""A segment whose own file header is damaged: keep its records when what the
header said can be checked some other way.

Theory of operation
-------------------
The records after a file header are self-describing (size, sequence, type,
CRC32C each: format.py), but the header is what attributes them: the venue,
shard and - the one thing no record carries - the identity of the ring they
came from.  A header that fails its own checks (bad magic, CRC mismatch,
zeroed, random bytes) may be wrong in any field, so none of its fields is
used.  Instead every field is rebuilt from something that can be checked:

* venue, shard, first sequence and creation time (to the second): the file
  name, which the flusher wrote and the header damage did not touch.  The
  name's first sequence is checked against the records: the first record
  that passes the frame checks must carry it, or - when damage spans the
  header and the first records too - a sequence above it that is plausible
  for the damaged bytes (each lost record took at least 32 of them: the
  resynchronisation rule of format.py).  The sequences in between are lost
  and named like any hole.
* ring identity and host: a neighbouring segment of the same venue and
  shard whose header is intact and whose sequences join this file's without
  a break - the previous one ends at the name's first sequence - 1, or the
  next one starts at this file's last sequence + 1.  One ring numbers its
  frames without a break and a new ring starts again from 0, so a join is
  the records' own evidence that they came from the neighbour's ring.

If any of this cannot be checked (no segment name, no record that passes,
a first sequence that does not fit the name, no neighbour that joins), the
file keeps today's treatment - recovery sets it aside as ``.corrupt``,
``verify`` reports the bad header, readers refuse it - and the error says
which check failed.  Compressed files are not searched.
"""
from __future__ import annotations

import calendar
import mmap
import os
import time
from typing import NamedTuple

from common.errors import CorruptSegment, SegmentError
from flusher.segments.format import FILE_HEADER, ScanResult, SegmentHeader, _scan_records, read_header
from flusher.segments.names import O_CLOEXEC, O_NOFOLLOW, SUFFIX_ZST, list_segments, parse_name


class HeaderDamage(NamedTuple):
    """What was wrong with a file header and what its rebuilt fields were checked against."""
    reason: str           # why the header failed its checks
    offset: int           # where in the header
    first_off: int        # the first record that passed the frame checks
    joined: str           # the neighbouring segment whose sequences these records join

    def describe(self) -> str:
        return (f"file header damaged ({self.reason}); its fields are not used: venue, shard and "
                f"first sequence from the file name, checked against the records, and the ring "
                f"identity from {os.path.basename(self.joined)}, whose sequences they join")


def _name_ns(stamp: str) -> int:
    return calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ")) * 1_000_000_000


def scan_damaged(path: str, exc: SegmentError, *, index_every: int = 0) -> ScanResult:
    """Check the records of a segment whose header failed with ``exc``.

    Returns a scan (like ``format.scan``) whose ``header`` is rebuilt from
    what was checked (module docstring) and whose ``header_damage`` says so;
    records lost at the front, if any, are its first hole.

    Raises:
        CorruptSegment: nothing could be checked; the reason says which check
            failed (offset: where the header failed).
    """
    def refuse(because: str) -> CorruptSegment:
        return CorruptSegment(path, exc.offset, f"{exc.reason}; its records cannot be kept: {because}")

    sn = parse_name(path)
    if sn is None:
        raise refuse("the file name is not a segment name, so nothing checks their venue, shard "
                     "or first sequence")
    if sn.suffix == SUFFIX_ZST:
        raise refuse("a compressed file is not searched for records")
    fd = os.open(path, os.O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size <= FILE_HEADER:
            raise refuse(f"the file holds {size} bytes, no record after the header")
        provisional = SegmentHeader(sn.venue, sn.shard, "", bytes(16), _name_ns(sn.time), sn.first_seq)
        res = ScanResult(path, provisional, size)
        with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as mm:
            _scan_records(memoryview(mm), size, res, index_every)
    finally:
        os.close(fd)
    if res.records == 0:
        raise refuse("no record after the header passes the frame checks")
    front = res.holes[0] if res.holes and res.holes[0].offset == FILE_HEADER else None
    first_off = front.end if front else FILE_HEADER
    # Without a front hole nothing yet compared the first record with the
    # name (the scan expects no particular sequence there); with one, the
    # resynchronisation already required a plausible sequence above it.
    if front is None and res.first_seq != sn.first_seq:
        raise refuse(f"the first record carries sequence {res.first_seq}, not the "
                     f"{sn.first_seq} of the file name")
    joined = _joining_neighbour(path, sn, res.last_seq)
    if joined is None:
        raise refuse("no neighbouring segment of the same venue and shard joins their sequences, "
                     "so the ring they came from cannot be checked")
    nb_path, nb = joined
    res.header = SegmentHeader(sn.venue, sn.shard, nb.host, nb.ring_id, provisional.created_ns,
                               sn.first_seq)
    res.header_damage = HeaderDamage(exc.reason, exc.offset, first_off, nb_path)
    return res


def _joining_neighbour(path: str, sn, last_seq: int) -> tuple[str, SegmentHeader] | None:
    """The segment just before this one (in creation order) if it ends at the
    name's first sequence - 1, else the one just after if it starts at
    ``last_seq`` + 1; with its (intact) header."""
    from flusher.segments.recovery import last_on_disk   # recovery imports this module
    shard_root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    me = (sn.time, sn.first_seq)
    prev = nxt = None
    for p in list_segments(shard_root, venue=sn.venue, shard=sn.shard):
        o = parse_name(p)
        if (o.time, o.first_seq) < me:
            prev = p
        elif (o.time, o.first_seq) > me and nxt is None:
            nxt = p
    for cand in (prev, nxt):
        if cand is None:
            continue
        try:
            h = read_header(cand)
            if h.venue != sn.venue or h.shard != sn.shard:
                continue
            if cand is prev:
                joins = last_on_disk(cand)[1] + 1 == sn.first_seq
            else:
                joins = h.first_seq == last_seq + 1 == parse_name(cand).first_seq
        except (SegmentError, OSError):
            continue             # a neighbour that cannot be read confirms nothing
        if joins:
            return cand, h
    return None


__all__ = ["HeaderDamage", "scan_damaged"]
