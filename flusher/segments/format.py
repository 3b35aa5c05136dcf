"""Segment files: the permanent on-disk record of a ring, and how to write them safely.

Segment format (version 1)
==========================
All integers little endian.  A segment is a 256-byte file header followed by
records.  A record is a ring frame exactly as the ring holds it (see
``ring/frame.py``): the flusher writes contiguous ring bytes straight through.

File header (256 bytes)::

    offset size field
         0    8 magic        b"CAPSEG\\r\\n"  (43 41 50 53 45 47 0D 0A)
         8    2 version      u16, 1
        10    2 header_size  u16, 256: the first record starts here
        12    4 shard        u32
        16   16 ring_id      the identity of the ring the records came from
        32    8 created_ns   i64, wall-clock ns since the Unix epoch at creation
        40    8 first_seq    u64, sequence of the first record (informational)
        48   32 venue        UTF-8, NUL padded
        80   64 host         UTF-8, NUL padded
       144  108 reserved     zero
       252    4 header_crc   CRC32C of bytes 0..252

Record (= ring frame), starting at offset 256 and every 8 bytes thereafter::

    offset size field
         0    4 size     u32, header + payload bytes, unpadded (>= 32)
         4    4 seq_lo   u32, low 32 bits of seq
         8    8 seq      u64, ring-lifetime sequence number
        16    8 ts_ns    i64, receive time, ns since the Unix epoch
        24    1 type     1 data, 2 control, 4/5/6 fragment begin/middle/end
        25    1 flags    bit 0 binary message, bit 1 aborted (on fragment end);
                         on fragment begin: low nibble = the message's flags,
                         high nibble = the message's type
        26    2 conn     u16, connection id inside the shard
        28    4 crc      CRC32C (Castagnoli) of bytes 0..28, then the payload
        32    n payload  size - 32 bytes
         .    . padding  up to the next multiple of 8; any value (ring bytes
                         written through, not covered by the CRC): skip it

Padding frames (type 3) are never written.  Inside one segment the sequence
grows by exactly one per record, with one exception that is itself a record:
a gap record (below) stands for a range of lost sequences, and the record
after it carries the sequence after that range.  Frames the receiver dropped
(ring full) are recorded by the receiver as control records
``{"kind": "drop", ...}``; they never had sequence numbers.

Gap records.  When recovery finds a damaged region inside a segment (a torn
page of an open segment after a power loss, a bit flip), it keeps every
record that passes the frame checks before and after the region and writes,
where the region was, one control record ``{"kind": "gap", "first_seq": a,
"last_seq": b, ...}`` (canonical JSON, ``kind`` first) whose own sequence is
``a``: sequences a..b are lost, and the next record carries b + 1.  The
record also names the damaged byte range of the original file and why the
records there failed.  A reader treats the gap record as covering a..b.

Resynchronisation.  After a record fails its checks, the next record start
is found by scanning every 8-byte offset for a frame whose size, seq_lo,
type and CRC32C check out and whose sequence is above the last good one; the
candidate must also be plausible: the lost records each took at least 32
bytes of the damaged region, so at most ``region / 32`` sequences can be
missing.  Nothing valid after the damage means a torn tail: it is cut off.  A message larger than the ring's
fragment limit is a chain FRAG_BEGIN, FRAG_MIDDLE..., FRAG_END that may cross
a segment boundary; a FRAG_END with the aborted flag means the message was
dropped and the chain must be discarded.

File names, states and directories: ``flusher/segments/names.py``.  Writing a
segment: ``flusher/segments/writer.py``.
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, NamedTuple

import orjson

from flusher.segments.names import O_CLOEXEC, O_NOFOLLOW, SUFFIX_CORRUPT
from common.errors import CorruptSegment, NotASegment, TruncatedSegment, UnsupportedVersion
from ring.frame import HEADER as FRAME_HEADER
from ring.frame import FrameType, align8, crc32c, encode, frame_crc
from ring._ringlib import ffi, lib

if TYPE_CHECKING:                 # salvage.py imports this module
    from flusher.segments.salvage import HeaderDamage

MAGIC = b"CAPSEG\r\n"
VERSION = 1
FILE_HEADER = 256
_FH = struct.Struct("<8sHHI16sqQ32s64s")
_FH_CRC_AT = 252
MAX_RECORD = 1 << 30          # no ring frame is this large; bigger sizes are garbage
_REC = struct.Struct("<IIQqBBHI")
_VALID_TYPES = frozenset(int(t) for t in FrameType if t != FrameType.PADDING)
_CONTROL = int(FrameType.CONTROL)
GAP_PREFIX = b'{"kind":"gap"'

# -- errors (rooted at common.errors.SegmentError) -------------------------------


# -- file header ---------------------------------------------------------------
@dataclass(frozen=True)
class SegmentHeader:
    venue: str
    shard: int
    host: str
    ring_id: bytes
    created_ns: int
    first_seq: int
    version: int = VERSION

    def encode(self) -> bytes:
        venue = self.venue.encode()
        host = self.host.encode()[:64]
        if len(venue) > 32:
            raise ValueError(f"venue name longer than 32 bytes: {self.venue!r}")
        if len(self.ring_id) != 16:
            raise ValueError("ring_id must be 16 bytes")
        buf = bytearray(FILE_HEADER)
        _FH.pack_into(buf, 0, MAGIC, self.version, FILE_HEADER, self.shard, self.ring_id,
                      self.created_ns, self.first_seq, venue, host)
        struct.pack_into("<I", buf, _FH_CRC_AT, crc32c(bytes(buf[:_FH_CRC_AT])))
        return bytes(buf)

    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview, path: str = "<buffer>") -> "SegmentHeader":
        """Parse and check a file header.

        Raises:
            NotASegment: wrong magic (offset 0).
            TruncatedSegment: fewer than 256 bytes (offset = bytes present).
            UnsupportedVersion: a version other than 1 (offset 8).
            CorruptSegment: header CRC mismatch (offset 252).
        """
        n = len(buf)
        if n < len(MAGIC) or bytes(buf[:len(MAGIC)]) != MAGIC:
            if n < len(MAGIC) and MAGIC.startswith(bytes(buf[:n])):
                raise TruncatedSegment(path, n, f"file ends inside the segment header "
                                                f"({n} of {FILE_HEADER} bytes)")
            raise NotASegment(path, 0, "not a segment file (bad magic)")
        if n < 10:
            raise TruncatedSegment(path, n, f"file ends inside the segment header ({n} of {FILE_HEADER} bytes)")
        version = struct.unpack_from("<H", buf, 8)[0]
        if version != VERSION:
            raise UnsupportedVersion(path, 8, version, VERSION)
        if n < FILE_HEADER:
            raise TruncatedSegment(path, n, f"file ends inside the segment header ({n} of {FILE_HEADER} bytes)")
        (_, version, hsize, shard, ring_id, created, first, venue, host) = _FH.unpack_from(buf, 0)
        crc = struct.unpack_from("<I", buf, _FH_CRC_AT)[0]
        if crc != crc32c(bytes(buf[:_FH_CRC_AT])):
            raise CorruptSegment(path, _FH_CRC_AT, "segment header CRC mismatch")
        if hsize != FILE_HEADER:
            raise CorruptSegment(path, 10, f"unexpected header size {hsize}")
        return cls(venue.rstrip(b"\0").decode(errors="replace"), shard,
                   host.rstrip(b"\0").decode(errors="replace"), bytes(ring_id), created, first, version)


def read_header(path: str) -> SegmentHeader:
    """The header of a segment file in any form (.seg, .seg.open, .seg.zst)."""
    with open_segment_stream(path) as f:
        return SegmentHeader.decode(f.read(FILE_HEADER), path)


def open_segment_stream(path: str):
    """A binary file object over the uncompressed bytes of a segment."""
    f = open(path, "rb")
    if path.endswith(".zst") or path.endswith(".zst" + SUFFIX_CORRUPT):
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(f, closefd=True)
    return f


# -- gap records -------------------------------------------------------------
def gap_record(first_seq: int, last_seq: int, ts_ns: int, **detail) -> bytes:
    """An encoded control record standing for the lost sequences first..last.

    ``detail`` (byte offsets, reason, ...) is added after the fixed fields.
    """
    if last_seq < first_seq:
        raise ValueError(f"empty gap {first_seq}..{last_seq}")
    body = {"kind": "gap", "first_seq": first_seq, "last_seq": last_seq,
            "count": last_seq - first_seq + 1, **detail}
    return encode(orjson.dumps(body), first_seq, ts_ns, FrameType.CONTROL)


def gap_range(typ: int, seq: int, payload) -> int | None:
    """For a gap record: the last sequence it stands for; None for any other record.

    A payload that starts like a gap record but does not parse, or whose
    first_seq is not the record's own sequence, is not a gap record.
    """
    if typ != _CONTROL or bytes(payload[:len(GAP_PREFIX)]) != GAP_PREFIX:
        return None
    try:
        obj = orjson.loads(bytes(payload))
        first, last = obj["first_seq"], obj["last_seq"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if first != seq or not isinstance(last, int) or last < first:
        return None
    return last


# -- record scanning -----------------------------------------------------------
class Problem(NamedTuple):
    offset: int
    reason: str
    kind: str             # "torn": nothing valid follows; "corrupt": valid records follow


class Hole(NamedTuple):
    """A damaged region inside a segment with valid records after it."""
    offset: int           # where the first bad record starts
    end: int              # where the next valid record starts
    first_seq: int        # sequences lost there (empty when last_seq < first_seq)
    last_seq: int
    reason: str           # why the record at ``offset`` failed


@dataclass
class ScanResult:
    """What a full check of one segment found."""
    path: str
    header: SegmentHeader
    file_size: int
    valid_end: int = FILE_HEADER          # offset just after the last good record
    records: int = 0
    first_seq: int = -1
    last_seq: int = -1                    # the last sequence covered (a gap record covers a range)
    min_ts: int = 0
    max_ts: int = 0
    ts_monotonic: bool = True
    problem: Problem | None = None        # the first problem: a hole ("corrupt") or the torn tail
    holes: list[Hole] = field(default_factory=list)
    tail: Problem | None = None           # invalid bytes at the end with nothing valid after them
    gap_records: int = 0
    gap_frames: int = 0                   # sequences gap records stand for
    index_seq: list[int] = field(default_factory=list)
    index_ts: list[int] = field(default_factory=list)
    index_off: list[int] = field(default_factory=list)
    header_damage: "HeaderDamage | None" = None   # the header was rebuilt from checks (salvage.py)


def _record_ok(buf, off: int, end: int, expect_seq: int | None) -> str | None:
    """None if a valid record starts at off, else why not."""
    if end - off < FRAME_HEADER:
        return "file ends inside a record header"
    size, lo, seq, _ts, typ, _fl, _conn, crc = _REC.unpack_from(buf, off)
    if size < FRAME_HEADER or size > MAX_RECORD:
        return f"implausible record size {size}"
    if lo != seq & 0xFFFFFFFF:
        return "seq_lo does not match seq"
    if typ not in _VALID_TYPES:
        return f"invalid record type {typ}"
    if off + align8(size) > end:
        return f"record of {size} bytes runs past the end of the file"
    if frame_crc(buf[off:off + size]) != crc:
        return "record CRC mismatch"
    if expect_seq is not None and seq != expect_seq:
        return f"sequence {seq} where {expect_seq} was expected"
    return None


def _valid_after(buf, off: int, end: int, after_seq: int,
                 hole_start: int | None = None) -> int | None:
    """Offset of the first valid record at or after off whose sequence is above
    after_seq and plausible for a hole starting at hole_start (each lost record
    took at least 32 bytes of it; without hole_start, any valid record)."""
    for o in range(off, end - FRAME_HEADER + 1, 8):
        size, lo, seq = struct.unpack_from("<IIQ", buf, o)
        if size < FRAME_HEADER or size > MAX_RECORD or lo != seq & 0xFFFFFFFF or seq <= after_seq:
            continue
        if hole_start is not None and seq - after_seq - 1 > (o - hole_start) // FRAME_HEADER:
            continue
        if _record_ok(buf, o, end, None) is None:
            return o
    return None


def scan(path: str, *, index_every: int = 0) -> ScanResult:
    """Check every record of an uncompressed segment (CRC, size, sequence).

    A bad record followed by a valid one (found by resynchronisation, see
    the module docstring) is a hole (``res.holes``); a bad record with
    nothing valid after it is a torn tail (``res.tail``).  ``res.problem`` is
    the first of them.  Records after a hole are counted like the others.
    With ``index_every`` > 0, collects every Nth record for the index.

    Raises:
        SegmentError subclasses for a bad file header.
    """
    fd = os.open(path, os.O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, FILE_HEADER, 0)
        hdr = SegmentHeader.decode(head, path)
        res = ScanResult(path, hdr, size)
        if size <= FILE_HEADER:
            return res
        with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as mm:
            _scan_records(memoryview(mm), size, res, index_every)
        return res
    finally:
        os.close(fd)


def _scan_records(buf: memoryview, end: int, res: ScanResult, every: int) -> None:
    off = FILE_HEADER
    expect: int | None = None
    prev_ts = None
    n = 0
    try:
        while off < end:
            why = _record_ok(buf, off, end, expect)
            if why is not None:
                # The sequence the bad record should have had: the one after
                # the last good record, or the header's first_seq.
                after = res.last_seq if n else res.header.first_seq - 1
                nxt = _valid_after(buf, off + 8, end, after, off)
                if nxt is None:
                    res.tail = Problem(off, why, "torn")
                    res.problem = res.problem or res.tail
                    break
                nseq = struct.unpack_from("<Q", buf, nxt + 8)[0]
                hole = Hole(off, nxt, after + 1, nseq - 1, why)
                res.holes.append(hole)
                res.problem = res.problem or Problem(off, why, "corrupt")
                off, expect = nxt, nseq
                continue
            size, _lo, seq, ts, typ = struct.unpack_from("<IIQqB", buf, off)
            if n == 0:
                res.first_seq = seq
                res.min_ts = res.max_ts = ts
            else:
                if ts < prev_ts:
                    res.ts_monotonic = False
                res.min_ts = min(res.min_ts, ts)
                res.max_ts = max(res.max_ts, ts)
            if every and n % every == 0:
                res.index_seq.append(seq)
                res.index_ts.append(ts)
                res.index_off.append(off)
            prev_ts = ts
            covered = gap_range(typ, seq, buf[off + FRAME_HEADER:off + size]) if typ == _CONTROL else None
            if covered is not None:
                res.gap_records += 1
                res.gap_frames += covered - seq + 1
                seq = covered
            res.last_seq = seq
            expect = seq + 1
            n += 1
            off += align8(size)
            res.valid_end = off
    finally:
        res.records = n
        buf.release()


#: Tests turn the C fast path off to check that it yields and raises exactly
#: what the record-by-record path does.
FAST_PATH = True
_SCAN_BATCH = 4096                      # records per C call (at most)
_NO_EXPECT = (1 << 64) - 1              # ring_seg_scan: no sequence expected yet
_GAP_C = ffi.new("uint8_t[]", GAP_PREFIX)


class _Scan:
    """ring_seg_scan's output buffers, one set per reader."""

    __slots__ = ("hdrs", "offs", "expect", "next")

    def __init__(self) -> None:
        self.hdrs = ffi.new("uint8_t[]", _SCAN_BATCH * FRAME_HEADER)
        self.offs = ffi.new("uint32_t[]", _SCAN_BATCH)
        self.expect = ffi.new("uint64_t *")
        self.next = ffi.new("uint64_t *")


def iter_stream_records(f, path: str, *, tolerate_tail: bool = False,
                        base: int = FILE_HEADER) -> Iterator[tuple[int, tuple, bytes]]:
    """Records of a segment read sequentially from a file object positioned at ``base``.

    Yields (offset, (size, seq_lo, seq, ts, type, flags, conn, crc), payload bytes).
    Checks size, CRC and sequence continuity.

    Raises:
        TruncatedSegment: the stream ends inside a record (unless tolerate_tail,
            for an open segment being written, where the iteration just ends).
        CorruptSegment: a record fails its checks.
    """
    use_fast = FAST_PATH
    fast = _Scan()
    buf = bytearray()
    start = 0              # index in buf of the next record
    off = base             # file offset of buf[start]
    eof = False
    expect = None
    chunk = 1 << 20
    while True:
        avail = len(buf) - start
        if avail < FRAME_HEADER or (avail >= FRAME_HEADER and
                                    align8(_REC.unpack_from(buf, start)[0]) > avail):
            if eof:
                if avail == 0:
                    return
                if tolerate_tail:
                    return
                raise TruncatedSegment(path, off, "file ends inside a record")
            need = FRAME_HEADER if avail < FRAME_HEADER else align8(_REC.unpack_from(buf, start)[0])
            if need > MAX_RECORD:
                raise CorruptSegment(path, off, f"implausible record size {need}")
            del buf[:start]
            start = 0
            while len(buf) < need:
                data = f.read(max(chunk, need - len(buf)))
                if not data:
                    eof = True
                    break
                buf += data
            continue
        # The fast path: one C call checks every plain record it can (see
        # csrc/segscan.c) and the whole batch is unpacked at once.  It stops
        # before anything else (a short, bad or gap record), which the
        # record-by-record code below handles with its own wording.
        n = 0
        if use_fast:
            with ffi.from_buffer("uint8_t[]", buf) as cbuf:
                fast.expect[0] = _NO_EXPECT if expect is None else expect
                n = lib.ring_seg_scan(cbuf + start, avail, MAX_RECORD, _GAP_C, len(GAP_PREFIX),
                                      fast.expect, fast.hdrs, fast.offs, _SCAN_BATCH, fast.next)
        if n:
            heads = list(_REC.iter_unpack(ffi.buffer(fast.hdrs, n * FRAME_HEADER)))
            offs = ffi.unpack(fast.offs, n)
            mv = memoryview(buf)
            try:
                pays = [bytes(mv[start + o + FRAME_HEADER:start + o + h[0]])
                        for o, h in zip(offs, heads)]
            finally:
                mv.release()
            for o, h, p in zip(offs, heads, pays):
                yield off + o, h, p
            expect = fast.expect[0]
            step = fast.next[0]
            start += step
            off += step
            continue
        rec = _REC.unpack_from(buf, start)
        size, lo, seq, typ = rec[0], rec[1], rec[2], rec[4]
        why = None
        if size < FRAME_HEADER or lo != seq & 0xFFFFFFFF or typ not in _VALID_TYPES:
            why = "invalid record header"
        else:
            mv = memoryview(buf)
            try:
                ok = frame_crc(mv[start:start + size]) == rec[7]
                payload = bytes(mv[start + FRAME_HEADER:start + size])
            finally:
                mv.release()
            if not ok:
                why = "record CRC mismatch"
            elif expect is not None and seq != expect:
                why = f"sequence {seq} where {expect} was expected"
        if why is not None:
            if tolerate_tail:
                # An open segment: a record being written as we read it, or
                # a torn tail, ends the data if nothing follows it.
                rest = bytearray(buf[start:])
                while True:
                    data = f.read(chunk)
                    if not data:
                        break
                    rest += data
                after = rest[max(FRAME_HEADER, align8(size) if FRAME_HEADER <= size <= MAX_RECORD else 0):]
                if not after.strip(b"\0"):
                    return
            raise CorruptSegment(path, off, why)
        yield off, rec, payload
        covered = gap_range(typ, seq, payload) if typ == _CONTROL else None
        expect = (seq if covered is None else covered) + 1
        step = align8(size)
        start += step
        off += step


__all__ = [
    "MAGIC", "VERSION", "FILE_HEADER", "SegmentHeader", "ScanResult", "Problem", "Hole",
    "gap_record", "gap_range",
    "NotASegment", "TruncatedSegment", "UnsupportedVersion", "CorruptSegment",
    "scan", "read_header", "open_segment_stream", "iter_stream_records",
]
