"""Sidecar index of a closed segment: seek by sequence or receive time without scanning.

``<stem>.idx`` sits next to ``<stem>.seg`` (or ``.seg.zst``).  It is written
(temp name, fsync, rename) before the segment's own rename, so every closed
segment has one unless it was lost with a disk; readers treat a missing or
invalid index as "scan the segment", never as an error.

Index format (version 1), little endian::

    offset size field
         0    8 magic        b"CAPSIDX\\n"
         8    2 version      u16, 1
        10    2 flags        bit 0: receive times never decrease in this segment
        12    4 every        u32, one entry per `every` records
        16    8 entries      u64, n
        24    8 records      u64, records in the segment
        32    8 first_seq    u64
        40    8 last_seq     u64
        48    8 min_ts       i64, smallest receive time
        56    8 max_ts       i64, largest receive time
        64    8 data_size    u64, bytes of the (uncompressed) segment
        72   16 ring_id
        88   36 reserved     zero
       124    4 crc          CRC32C of bytes 0..124, then the three arrays
       128  8*n seq[n]       u64, sequence of records 0, every, 2*every, ...
         .  8*n ts[n]        i64, their receive times
         .  8*n offset[n]    u64, their byte offsets in the uncompressed segment
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from flusher.segments.names import O_NOFOLLOW
from ring.frame import crc32c

IDX_MAGIC = b"CAPSIDX\n"
IDX_VERSION = 1
IDX_HEADER = 128
_IH = struct.Struct("<8sHHIQQQQqqQ16s")
_CRC_AT = 124
F_TS_MONOTONIC = 1


@dataclass
class Index:
    ring_id: bytes
    every: int
    records: int
    first_seq: int
    last_seq: int
    min_ts: int
    max_ts: int
    data_size: int
    ts_monotonic: bool
    seq: np.ndarray
    ts: np.ndarray
    offset: np.ndarray

    def offset_for_seq(self, seq: int) -> int | None:
        """Offset of a record at or before the one with this sequence (None: start)."""
        i = int(np.searchsorted(self.seq, seq, side="right")) - 1
        return int(self.offset[i]) if i >= 0 else None

    def offset_for_time(self, ts: int) -> int | None:
        """Offset from which every record with receive time >= ts follows.

        Only meaningful when ``ts_monotonic``; otherwise None (scan it all).
        """
        if not self.ts_monotonic:
            return None
        i = int(np.searchsorted(self.ts, ts, side="left")) - 1
        return int(self.offset[i]) if i >= 0 else None


class IndexBuilder:
    """Collects every Nth record's (seq, ts, offset) while a segment is written."""

    def __init__(self, every: int = 1024) -> None:
        self.every = max(1, int(every))
        # Plain lists: a few entries per batch (one per `every` records).
        self._seq: list[int] = []
        self._ts: list[int] = []
        self._off: list[int] = []
        self.records = 0
        self.first_seq = -1
        self.last_seq = -1
        self.min_ts = 0
        self.max_ts = 0
        self.ts_monotonic = True
        self._last_ts: int | None = None

    def add(self, seq: np.ndarray, ts: np.ndarray, offsets: np.ndarray, base_count: int) -> None:
        """Records with these sequences/times at these segment offsets were appended.

        ``base_count`` is the number of records already in the segment.
        """
        n = len(seq)
        if n == 0:
            return
        ts = np.asarray(ts, dtype=np.int64)
        first = (-base_count) % self.every
        sel = slice(first, n, self.every)
        mono = n < 2 or not bool((ts[1:] < ts[:-1]).any())
        lo, hi = (int(ts[0]), int(ts[-1])) if mono else (int(ts.min()), int(ts.max()))
        self.add_summary(n, int(seq[0]), int(seq[-1]), int(ts[0]), int(ts[-1]), lo, hi, mono,
                         np.asarray(seq[sel]).tolist(), ts[sel].tolist(),
                         np.asarray(offsets[sel]).tolist())

    def add_summary(self, n: int, first_seq: int, last_seq: int, first_ts: int, last_ts: int,
                    min_ts: int, max_ts: int, mono: bool, idx_seq: list[int], idx_ts: list[int],
                    idx_off: list[int]) -> None:
        """``n`` records were appended, described by their summary (what
        ``ring.FileDrain`` returns): sequence and receive-time range, whether
        the times never went backwards among them, and the index entries
        that fall among them (records ``-records % every``, every ``every``)."""
        if n == 0:
            return
        self._seq += idx_seq
        self._ts += idx_ts
        self._off += idx_off
        if self.records == 0:
            self.first_seq = first_seq
            self.min_ts, self.max_ts = min_ts, max_ts
        else:
            self.min_ts, self.max_ts = min(self.min_ts, min_ts), max(self.max_ts, max_ts)
        if self.ts_monotonic and (not mono or (self._last_ts is not None and first_ts < self._last_ts)):
            self.ts_monotonic = False
        self._last_ts = last_ts
        self.last_seq = last_seq
        self.records += n

    @classmethod
    def from_scan(cls, res, every: int) -> "IndexBuilder":
        """From a segment.ScanResult collected with index_every=every."""
        b = cls(every)
        b._seq = [int(x) for x in res.index_seq]
        b._ts = [int(x) for x in res.index_ts]
        b._off = [int(x) for x in res.index_off]
        b.records = res.records
        b.first_seq, b.last_seq = res.first_seq, res.last_seq
        b.min_ts, b.max_ts = res.min_ts, res.max_ts
        b.ts_monotonic = res.ts_monotonic
        return b

    def encode(self, ring_id: bytes, data_size: int) -> bytes:
        seq = np.array(self._seq, dtype=np.uint64)
        ts = np.array(self._ts, dtype=np.int64)
        off = np.array(self._off, dtype=np.uint64)
        body = seq.astype("<u8").tobytes() + ts.astype("<i8").tobytes() + off.astype("<u8").tobytes()
        head = bytearray(IDX_HEADER)
        _IH.pack_into(head, 0, IDX_MAGIC, IDX_VERSION, F_TS_MONOTONIC if self.ts_monotonic else 0,
                      self.every, len(seq), self.records, max(self.first_seq, 0),
                      max(self.last_seq, 0), self.min_ts, self.max_ts, data_size, ring_id)
        crc = crc32c(body, crc32c(bytes(head[:_CRC_AT])))
        struct.pack_into("<I", head, _CRC_AT, crc)
        return bytes(head) + body

    def write(self, dfd: int, name: str, header, data_size: int) -> None:
        """Write ``name`` in the directory dfd: temp file, fsync, rename (no dir fsync:
        the segment's rename that follows fsyncs the directory)."""
        data = self.encode(header.ring_id, data_size)
        tmp = name + ".tmp"
        try:
            os.unlink(tmp, dir_fd=dfd)
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW, 0o600, dir_fd=dfd)
        try:
            mv = memoryview(data)
            while len(mv):
                mv = mv[os.write(fd, mv):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)


def decode_index(data: bytes) -> Index | None:
    if len(data) < IDX_HEADER:
        return None
    (magic, version, flags, every, n, records, first, last, min_ts, max_ts, size,
     ring_id) = _IH.unpack_from(data, 0)
    if magic != IDX_MAGIC or version != IDX_VERSION or len(data) != IDX_HEADER + 24 * n:
        return None
    crc = struct.unpack_from("<I", data, _CRC_AT)[0]
    if crc != crc32c(data[IDX_HEADER:], crc32c(data[:_CRC_AT])):
        return None
    a = IDX_HEADER
    seq = np.frombuffer(data, "<u8", n, a)
    ts = np.frombuffer(data, "<i8", n, a + 8 * n)
    off = np.frombuffer(data, "<u8", n, a + 16 * n)
    return Index(bytes(ring_id), every, records, first, last, min_ts, max_ts, size,
                 bool(flags & F_TS_MONOTONIC), seq, ts, off)


def load_index(path: str) -> Index | None:
    """The index at path, or None if it is missing or invalid."""
    try:
        fd = os.open(path, os.O_RDONLY | O_NOFOLLOW)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            return decode_index(f.read())
    except OSError:
        return None


def index_path_for(segment_path: str) -> str:
    for suf in (".seg.open", ".seg.zst", ".seg"):
        if segment_path.endswith(suf):
            return segment_path[: -len(suf)] + ".idx"
    return segment_path + ".idx"
