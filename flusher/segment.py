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
grows by exactly one per record; a segment never has holes.  Frames the
receiver dropped (ring full) are recorded by the receiver as control records
``{"kind": "drop", ...}``, not as holes.  A message larger than the ring's
fragment limit is a chain FRAG_BEGIN, FRAG_MIDDLE..., FRAG_END that may cross
a segment boundary; a FRAG_END with the aborted flag means the message was
dropped and the chain must be discarded.

File names and states.  ``{root}/{venue}/shard-{N}/{YYYY-MM-DD}/`` holds
``{venue}-{N}-{YYYYMMDDTHHMMSSZ}-{first_seq:020d}`` + suffix, the date and
time being the UTC creation time:

* ``.seg.open``  being written; may end in a torn record after a crash
* ``.seg``       closed: fsynced, complete, renamed (the rename is the commit)
* ``.seg.zst``   a closed segment compressed with zstandard (one frame, with
                 content checksum); decompresses to exactly the ``.seg`` bytes
* ``.idx``       sidecar index of a closed segment (see ``flusher/index.py``)
* ``.corrupt``   appended to a file found corrupt in the middle; kept for humans

Files are created 0600 with O_EXCL|O_NOFOLLOW and directories 0700; every
path component below the data directory is opened with O_NOFOLLOW, so a
symlink planted there is refused, never followed.
"""
from __future__ import annotations

import errno
import logging
import mmap
import os
import re
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple

from ring.errors import CorruptSegment, SegmentError
from ring.frame import HEADER as FRAME_HEADER
from ring.frame import FrameType, align8, crc32c, frame_crc

log = logging.getLogger("capture.flusher.segment")

MAGIC = b"CAPSEG\r\n"
VERSION = 1
FILE_HEADER = 256
_FH = struct.Struct("<8sHHI16sqQ32s64s")
_FH_CRC_AT = 252
MAX_RECORD = 1 << 30          # no ring frame is this large; bigger sizes are garbage
_REC = struct.Struct("<IIQqBBHI")
_VALID_TYPES = frozenset(int(t) for t in FrameType if t != FrameType.PADDING)

SUFFIX_OPEN = ".seg.open"
SUFFIX_SEG = ".seg"
SUFFIX_ZST = ".seg.zst"
SUFFIX_IDX = ".idx"
SUFFIX_CORRUPT = ".corrupt"
_NAME_RE = re.compile(r"^(?P<venue>.+)-(?P<shard>\d+)-(?P<time>\d{8}T\d{6}Z)-(?P<seq>\d{20})"
                      r"(?P<suffix>\.seg(?:\.open|\.zst)?)$")

FILE_MODE = 0o600
DIR_MODE = 0o700
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
try:
    _IOV_MAX = min(1024, os.sysconf("SC_IOV_MAX"))
except (ValueError, OSError, AttributeError):
    _IOV_MAX = 1024


# -- errors (rooted at ring.errors.SegmentError) -------------------------------
class NotASegment(SegmentError):
    """The file does not start with the segment magic."""


class TruncatedSegment(SegmentError):
    """The file ends inside its header or inside a record of a closed segment."""


class UnsupportedVersion(SegmentError):
    """The segment was written by a format version this code does not know."""

    def __init__(self, path: str, offset: int, version: int) -> None:
        super().__init__(path, offset, f"unsupported segment format version {version} "
                                       f"(this reader knows {VERSION})")
        self.version = version


class UnsafePath(SegmentError):
    """A path component is a symlink or not a directory; refused, not followed."""


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
            raise UnsupportedVersion(path, 8, version)
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


# -- record scanning -----------------------------------------------------------
class Problem(NamedTuple):
    offset: int
    reason: str
    kind: str             # "torn": nothing valid follows; "corrupt": valid records follow


@dataclass
class ScanResult:
    """What a full check of one segment found."""
    path: str
    header: SegmentHeader
    file_size: int
    valid_end: int = FILE_HEADER          # offset just after the last good record
    records: int = 0
    first_seq: int = -1
    last_seq: int = -1
    min_ts: int = 0
    max_ts: int = 0
    ts_monotonic: bool = True
    problem: Problem | None = None
    index_seq: list[int] = field(default_factory=list)
    index_ts: list[int] = field(default_factory=list)
    index_off: list[int] = field(default_factory=list)


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


def _valid_after(buf, off: int, end: int, after_seq: int) -> int | None:
    """Offset of a valid record at or after off whose sequence is above after_seq."""
    for o in range(off, end - FRAME_HEADER + 1, 8):
        size, lo, seq = struct.unpack_from("<IIQ", buf, o)
        if size < FRAME_HEADER or size > MAX_RECORD or lo != seq & 0xFFFFFFFF or seq <= after_seq:
            continue
        if _record_ok(buf, o, end, None) is None:
            return o
    return None


def scan(path: str, *, index_every: int = 0) -> ScanResult:
    """Check every record of an uncompressed segment (CRC, size, sequence).

    A bad record with nothing valid after it is a torn tail (``kind="torn"``);
    a bad record followed by any valid record is corruption (``"corrupt"``).
    With ``index_every`` > 0, collects every Nth record for the index.

    Raises:
        SegmentError subclasses for a bad file header.
    """
    fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC)
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
                after = res.last_seq if res.last_seq >= 0 else -1
                nxt = _valid_after(buf, off + 8, end, after)
                kind = "torn" if nxt is None else "corrupt"
                res.problem = Problem(off, why, kind)
                break
            size, _lo, seq, ts = struct.unpack_from("<IIQq", buf, off)
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
            res.last_seq = seq
            expect = seq + 1
            n += 1
            off += align8(size)
            res.valid_end = off
    finally:
        res.records = n
        buf.release()


# -- names and directories -----------------------------------------------------
class SegmentName(NamedTuple):
    venue: str
    shard: int
    time: str
    first_seq: int
    suffix: str

    @property
    def sort_key(self) -> tuple[str, int]:
        return (self.time, self.first_seq)


def parse_name(name: str) -> SegmentName | None:
    m = _NAME_RE.match(os.path.basename(name))
    if not m:
        return None
    return SegmentName(m["venue"], int(m["shard"]), m["time"], int(m["seq"]), m["suffix"])


def segment_stem(venue: str, shard: int, created_ns: int, first_seq: int) -> str:
    t = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created_ns // 1_000_000_000))
    return f"{venue}-{shard}-{t}-{first_seq:020d}"


def day_dir_name(created_ns: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(created_ns // 1_000_000_000))


def shard_dir(root: str, venue: str, shard: int) -> str:
    return os.path.join(root, venue, f"shard-{shard}")


def open_dir(root: str, parts: list[str], create: bool = True) -> int:
    """Open root/parts... as a directory fd, creating missing parts 0700.

    ``root`` is the configured data directory (taken as given); every part
    below it is opened with O_NOFOLLOW, so a symlink there raises UnsafePath.
    """
    fd = os.open(root, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            if create:
                try:
                    os.mkdir(part, DIR_MODE, dir_fd=fd)
                    os.fsync(fd)        # the new directory's name must survive a power loss
                except FileExistsError:
                    pass
            try:
                nfd = os.open(part, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePath(os.path.join(root, *parts[:i + 1]), 0,
                                     "is a symlink or not a directory; refusing to follow it") from exc
                raise
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def list_segments(directory: str, venue: str | None = None, shard: int | None = None,
                  include_open: bool = True) -> list[str]:
    """Segment files under directory (recursively), oldest first.

    When a segment exists both as ``.seg`` and ``.seg.zst`` (a crash during
    compression), the ``.seg`` is listed.  Corrupt and temporary files are not.
    """
    found: dict[tuple, tuple[SegmentName, str]] = {}
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=False):
        dirnames.sort()
        for fn in filenames:
            sn = parse_name(fn)
            if sn is None or (venue is not None and sn.venue != venue):
                continue
            if shard is not None and sn.shard != shard:
                continue
            if sn.suffix == SUFFIX_OPEN and not include_open:
                continue
            key = (sn.venue, sn.shard, sn.time, sn.first_seq, dirpath)
            prev = found.get(key)
            rank = {SUFFIX_SEG: 0, SUFFIX_OPEN: 1, SUFFIX_ZST: 2}[sn.suffix]
            if prev is None or rank < {SUFFIX_SEG: 0, SUFFIX_OPEN: 1, SUFFIX_ZST: 2}[prev[0].suffix]:
                found[key] = (sn, os.path.join(dirpath, fn))
    items = sorted(found.values(), key=lambda v: (v[0].venue, v[0].shard, v[0].time, v[0].first_seq))
    return [p for _, p in items]


# -- the writer ----------------------------------------------------------------
class SegmentWriter:
    """One open segment: appended to with pwrite, closed by fsync + rename + dir fsync.

    The writer keeps ``size`` = the bytes known good.  A failed write (ENOSPC,
    EIO) truncates the file back to ``size`` so the file never holds a partial
    record the writer knows about; the caller retries the same bytes later.
    """

    def __init__(self, root: str, header: SegmentHeader, *, index_every: int = 1024) -> None:
        from flusher.index import IndexBuilder
        self.root = root
        self.header = header
        self.day = day_dir_name(header.created_ns)
        self.stem = segment_stem(header.venue, header.shard, header.created_ns, header.first_seq)
        parts = [header.venue, f"shard-{header.shard}", self.day]
        self.dir = os.path.join(root, *parts)
        self.path = os.path.join(self.dir, self.stem + SUFFIX_OPEN)
        self.final_path = os.path.join(self.dir, self.stem + SUFFIX_SEG)
        self.index = IndexBuilder(index_every)
        self.size = 0
        self.synced_size = 0
        self.synced_last_seq = header.first_seq - 1     # newest sequence known durable here
        self.records = 0
        self.last_seq = -1
        self.closed = False
        self._needs_truncate = False
        self._renamed = False
        self._dfd = open_dir(root, parts)
        try:
            self._fd = os.open(self.stem + SUFFIX_OPEN,
                               os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC,
                               FILE_MODE, dir_fd=self._dfd)
        except BaseException:
            os.close(self._dfd)
            raise
        try:
            self._pwrite_all(header.encode(), 0)
        except BaseException:
            self._discard()
            raise
        self.size = FILE_HEADER
        # The new name must survive a power loss, or recovery cannot find it.
        try:
            os.fsync(self._dfd)
        except OSError:
            pass

    def _discard(self) -> None:
        try:
            os.close(self._fd)
        finally:
            try:
                os.unlink(self.stem + SUFFIX_OPEN, dir_fd=self._dfd)
            except OSError:
                pass
            os.close(self._dfd)
            self.closed = True

    def _pwrite_all(self, data, offset: int) -> None:
        mv = memoryview(data).cast("B")
        while len(mv):
            n = os.pwrite(self._fd, mv, offset)
            if n <= 0:
                raise OSError(errno.EIO, "short write")
            mv = mv[n:]
            offset += n

    def _pwritev_all(self, chunks: list, offset: int) -> None:
        i = 0
        while i < len(chunks):
            group = chunks[i:i + _IOV_MAX]
            n = os.pwritev(self._fd, group, offset)
            if n <= 0:
                raise OSError(errno.EIO, "short write")
            offset += n
            # skip what was written; a partial write continues mid-buffer
            while n and i < len(chunks):
                ln = len(chunks[i])
                if n >= ln:
                    n -= ln
                    i += 1
                else:
                    chunks[i] = memoryview(chunks[i]).cast("B")[n:]
                    n = 0

    def _repair(self) -> None:
        os.ftruncate(self._fd, self.size)
        self._needs_truncate = False

    def _guarded_write(self, write):
        """``write(offset)`` at the end of the good bytes; if it raises
        OSError, cut the file back to them (no partial record stays behind)
        and re-raise.  Returns (offset, what write returned)."""
        if self._needs_truncate:
            self._repair()
        off = self.size
        try:
            return off, write(off)
        except OSError:
            self._needs_truncate = True
            try:
                self._repair()
            except OSError:
                pass
            raise

    def append(self, chunks: list, nbytes: int, seq, ts, offsets) -> None:
        """Append contiguous record bytes (a list of buffers totalling nbytes).

        ``seq``/``ts``/``offsets`` are numpy arrays of the records in them
        (offsets relative to the first chunk) for the index.

        Raises:
            OSError: the write failed; the file is back at its previous size.
        """
        def write(off: int) -> None:
            if len(chunks) == 1:
                self._pwrite_all(chunks[0], off)
            else:
                self._pwritev_all(list(chunks), off)

        off, _ = self._guarded_write(write)
        self.size = off + nbytes
        n = len(seq)
        if n:
            self.index.add(seq, ts, offsets + off, self.records)
            self.records += n
            self.last_seq = int(seq[-1])

    def append_from_ring(self, drain, room: int, skip_below: int = 0):
        """Write the frames waiting in a tethered reader (``ring.FileDrain``)
        straight from the ring: at most ``room`` bytes, except that an empty
        segment takes one frame larger than that.  Returns ``ring.Drained``.

        Raises:
            OSError: the write failed; the file is back at its previous size
                and the reader's cursor has not moved.
        """
        off, r = self._guarded_write(
            lambda off: drain.write(self._fd, off, room, oversize_ok=self.records == 0,
                                    records_before=self.records, skip_below=skip_below,
                                    path=self.path))
        self.size = off + r.nbytes
        if r.frames:
            self.index.add_summary(r.frames, r.first_seq, r.last_seq, r.first_ts, r.last_ts,
                                   r.min_ts, r.max_ts, r.ts_monotonic, r.index_seq, r.index_ts,
                                   r.index_off)
            self.records += r.frames
            self.last_seq = r.last_seq
        return r

    def sync(self) -> None:
        """fsync the data written so far (raises OSError)."""
        if self.synced_size == self.size:
            return
        os.fsync(self._fd)
        self.synced_size = self.size
        self.synced_last_seq = self.last_seq if self.records else self.synced_last_seq

    def rollback_unsynced(self) -> str:
        """After a failed fsync: cut the file back to what was last synced and
        close the descriptors without finishing (flusher.recovery.recover_open does that).

        Linux may drop dirty pages that failed to write and report the next
        fsync as clean, so bytes written since the last good fsync cannot be
        trusted; the caller writes them again from the ring.  Returns the path.
        """
        try:
            os.ftruncate(self._fd, self.synced_size)
            os.fsync(self._fd)
        except OSError:
            pass      # recovery checks every record anyway
        self.abandon()
        return self.path

    def close(self) -> str:
        """fsync, write the index, rename to .seg, fsync the directory.

        Returns the final path ("" if the segment had no records and was
        removed).  Safe to call again after an OSError: it resumes at the
        step that failed.
        """
        if self.closed:
            return self.final_path if self.records else ""
        if not self._renamed:
            if self._needs_truncate:
                self._repair()
            if self.records == 0:
                self._discard()
                return ""
            os.fsync(self._fd)
            self.synced_size = self.size
            self.synced_last_seq = self.last_seq
            self.index.write(self._dfd, self.stem + SUFFIX_IDX, self.header, self.size)
            os.rename(self.stem + SUFFIX_OPEN, self.stem + SUFFIX_SEG,
                      src_dir_fd=self._dfd, dst_dir_fd=self._dfd)
            self._renamed = True
            self.path = self.final_path
        os.fsync(self._dfd)
        os.close(self._fd)
        os.close(self._dfd)
        self.closed = True
        return self.final_path

    def abandon(self) -> None:
        """Close the descriptors without finishing (a test's simulated crash)."""
        if not self.closed:
            os.close(self._fd)
            os.close(self._dfd)
            self.closed = True


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
        expect = seq + 1
        step = align8(size)
        start += step
        off += step


def default_host() -> str:
    return socket.gethostname()


def writer_header(venue: str, shard: int, ring_id: bytes, created_ns: int, first_seq: int,
                  host: str | None = None) -> SegmentHeader:
    return SegmentHeader(venue, shard, host or default_host(), ring_id, created_ns, first_seq)


__all__ = [
    "MAGIC", "VERSION", "FILE_HEADER", "SegmentHeader", "SegmentWriter", "ScanResult", "Problem",
    "NotASegment", "TruncatedSegment", "UnsupportedVersion", "UnsafePath", "CorruptSegment",
    "scan", "list_segments", "parse_name", "read_header", "open_segment_stream",
    "iter_stream_records", "segment_stem", "shard_dir",
    "writer_header", "default_host", "SUFFIX_OPEN", "SUFFIX_SEG", "SUFFIX_ZST",
    "SUFFIX_IDX", "SUFFIX_CORRUPT",
]
