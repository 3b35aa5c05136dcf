"""Segment records in batches: the bulk reader of the publisher's catch-up.

:func:`flusher.segments.read.records` yields one record at a time through a
generator, with a struct unpack, a CRC call and several Python steps each:
measured as most of the catch-up's per-frame cost.  :func:`record_batches`
reads the same records as columns, like a ring reader's batch
(:class:`ring.reader.Batch`): per chunk of the file one Python loop walks
the record sizes (each size gives the next offset, so the walk itself is
sequential), then numpy takes every header field of every record at once
and checks them together; only the CRC, one C call, and the payload slice
remain per record.

Theory of operation
-------------------
The chunk is a ``bytearray`` whose start is a record boundary, so every
record header is 8-byte aligned inside it and the header words are
``u64[off // 8 + k]``.  A chunk yields the whole records it holds that pass
every check of :func:`flusher.segments.format.iter_stream_records` (size,
seq_lo, type, CRC, sequence continuity with gap records covering their
range).  At the first record that does not (or that the chunk does not hold
whole at the end of the file) the bulk walk stops and the per-record reader
takes over from that record's offset for the rest of the file: damage,
torn tails of open segments and truncation are then judged, and raised,
exactly as everywhere else (the same error types, files and offsets).
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np

from common.errors import CorruptSegment
from flusher.segments.format import (FILE_HEADER, GAP_PREFIX, MAX_RECORD, SegmentHeader, gap_range,
                                     iter_stream_records, open_segment_stream)
from flusher.segments.index import index_path_for, load_index
from flusher.segments.names import SUFFIX_OPEN
from flusher.segments.read import _skip
from ring._ringlib import ffi, lib
from ring.frame import HEADER as FRAME_HEADER, FrameType

_CHUNK = 4 << 20
_CONTROL = int(FrameType.CONTROL)
_VALID = np.zeros(256, dtype=bool)
_VALID[[int(t) for t in FrameType if t != FrameType.PADDING]] = True


class RecordBatch(NamedTuple):
    """Columns of consecutive valid records (lists: the consumer's loop reads
    plain ints faster than numpy scalars)."""

    seq: list[int]
    ts: list[int]
    type: list[int]
    flags: list[int]
    conn: list[int]
    payload: list[bytes]


def record_batches(path: str, *, start_seq: int | None = None,
                   header_out: list | None = None) -> Iterator[RecordBatch]:
    """The records of one segment, in batches (see the module docstring).

    ``start_seq``: skip ahead with the index, as :func:`read.records` does
    (records before it may still be yielded; the caller filters).

    Raises:
        SegmentError subclasses, as :func:`read.records`.
    """
    with open_segment_stream(path) as f:
        hdr = SegmentHeader.decode(f.read(FILE_HEADER), path)
        if header_out is not None:
            header_out.append(hdr)
        base = FILE_HEADER
        if start_seq is not None:
            idx = load_index(index_path_for(path))
            if idx is not None:
                base = max(FILE_HEADER, idx.offset_for_seq(start_seq) or FILE_HEADER)
        if base > FILE_HEADER:
            _skip(f, base - FILE_HEADER)
        yield from _batches(f, path, base)


def _batches(f, path: str, off: int) -> Iterator[RecordBatch]:
    buf = bytearray()
    eof = False
    expect: int | None = None
    while True:
        if not eof:
            data = f.read(_CHUNK)
            if data:
                buf += data
            else:
                eof = True
        # Walk the sizes of the whole records in buf.
        n_buf = len(buf)
        offs: list[int] = []
        pos = 0
        bad_size = False
        sizes = memoryview(buf)[: n_buf - n_buf % 4].cast("I") if n_buf >= 4 else None
        while pos + FRAME_HEADER <= n_buf:
            size = sizes[pos >> 2]
            if size < FRAME_HEADER or size > MAX_RECORD:
                bad_size = True             # not a record header: the slow path judges it
                break
            step = (size + 7) & ~7
            if pos + step > n_buf:
                break
            offs.append(pos)
            pos += step
        if sizes is not None:
            sizes.release()
        good = _check(buf, offs, expect) if offs else 0
        if good:
            yield _take(buf, offs[:good])
            last = offs[good - 1]
            expect = _next_expected(buf, last)
            cut = offs[good] if good < len(offs) else pos
            del buf[:cut]
            off += cut
        if good < len(offs) or (eof and buf) or (bad_size and good == len(offs)):
            # A record that fails a check, or bytes at the end that are not a
            # whole record: the per-record reader decides what they are.
            yield from _slow(f, path, buf, off, expect)
            return
        if eof and not buf:
            return


def _check(buf: bytearray, offs: list[int], expect: int | None) -> int:
    """How many of the records at ``offs`` pass every check, from the first."""
    n = len(offs)
    u64 = np.frombuffer(buf, dtype="<u8", count=len(buf) // 8)
    at = np.asarray(offs, dtype=np.int64) >> 3
    w0 = u64[at]
    seq = u64[at + 1]
    w3 = u64[at + 3]
    size = (w0 & 0xFFFFFFFF).astype(np.int64)
    typ = (w3 & 0xFF).astype(np.intp)
    ok = ((w0 >> np.uint64(32)) == (seq & np.uint64(0xFFFFFFFF))) & _VALID[typ]
    # Continuity: each record's sequence is the one after the previous
    # record's (a gap record: after the range it covers).
    nxt = np.empty(n, dtype=np.uint64)
    nxt[1:] = seq[:-1] + np.uint64(1)
    if expect is None:
        nxt[0] = seq[0]
    else:
        nxt[0] = expect
    cont = seq == nxt
    bad = np.flatnonzero(~cont)
    for i in bad.tolist():          # rare: only after a gap record
        if i > 0 and typ[i - 1] == _CONTROL:
            covered = _gap_end(buf, offs[i - 1], int(size[i - 1]), int(seq[i - 1]))
            if covered is not None and covered + 1 == int(seq[i]):
                cont[i] = True
    ok &= cont
    crc = (w3 >> np.uint64(32)).tolist()
    first_bad = np.flatnonzero(~ok)
    limit = int(first_bad[0]) if first_bad.size else n
    p = ffi.from_buffer(buf)
    sizes = size.tolist()
    frame_crc = lib.ring_frame_crc
    for i in range(limit):
        if frame_crc(p + offs[i], sizes[i]) != crc[i]:
            return i
    return limit


def _gap_end(buf: bytearray, off: int, size: int, seq: int) -> int | None:
    payload = bytes(buf[off + FRAME_HEADER:off + size])
    if not payload.startswith(GAP_PREFIX):
        return None
    return gap_range(_CONTROL, seq, payload)


def _next_expected(buf: bytearray, off: int) -> int:
    size = int.from_bytes(buf[off:off + 4], "little")
    seq = int.from_bytes(buf[off + 8:off + 16], "little")
    if buf[off + 24] == _CONTROL:
        covered = _gap_end(buf, off, size, seq)
        if covered is not None:
            return covered + 1
    return seq + 1


def _take(buf: bytearray, offs: list[int]) -> RecordBatch:
    u64 = np.frombuffer(buf, dtype="<u8", count=len(buf) // 8)
    at = np.asarray(offs, dtype=np.int64) >> 3
    w0 = u64[at]
    w3 = u64[at + 3]
    size = (w0 & 0xFFFFFFFF).tolist()
    mv = memoryview(buf)
    try:
        payloads = [bytes(mv[o + FRAME_HEADER:o + s]) for o, s in zip(offs, size)]
    finally:
        mv.release()
    del u64
    return RecordBatch(u64_list(buf, at + 1), u64_list(buf, at + 2, signed=True),
                       (w3 & 0xFF).tolist(), ((w3 >> np.uint64(8)) & 0xFF).tolist(),
                       ((w3 >> np.uint64(16)) & 0xFFFF).tolist(), payloads)


def u64_list(buf: bytearray, at: np.ndarray, signed: bool = False) -> list[int]:
    words = np.frombuffer(buf, dtype="<i8" if signed else "<u8", count=len(buf) // 8)
    return words[at].tolist()


def _slow(f, path: str, rest: bytearray, off: int, expect: int | None) -> Iterator[RecordBatch]:
    """The per-record reader over ``rest`` and then the rest of the file."""
    stream = _Prefixed(bytes(rest), f)
    for _off, rec, payload in iter_stream_records(stream, path, base=off,
                                                  tolerate_tail=path.endswith(SUFFIX_OPEN)):
        seq = rec[2]
        if expect is not None and seq != expect:
            raise CorruptSegment(path, _off, f"sequence {seq} where {expect} was expected")
        covered = gap_range(rec[4], seq, payload) if rec[4] == _CONTROL else None
        expect = (seq if covered is None else covered) + 1
        yield RecordBatch([seq], [rec[3]], [rec[4]], [rec[5]], [rec[6]], [payload])


class _Prefixed:
    """``head`` bytes, then the file: what the bulk walk had read ahead."""

    def __init__(self, head: bytes, f) -> None:
        self.head, self.f = head, f

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n < 0 or n >= len(self.head):
                out, self.head = self.head, b""
                return out
            out, self.head = self.head[:n], self.head[n:]
            return out
        return self.f.read(n)
