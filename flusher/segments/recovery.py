"""Recovery of segment files after a crash, and what is already on disk.

On start the flusher verifies its open segment (``recover_open``): a torn
tail is cut off and the segment closed; ``last_on_disk`` tells which ring
sequence the newest segment ends with, so frames already written are not
written twice.  The format itself is in ``flusher/segments/format.py``.

A damaged region costs only itself.  Writeback is not in file order, so a
power loss can leave a page of zeros (or stale bytes) in the middle of an
open segment with good pages after it.  Recovery then rebuilds the segment
(``_rebuild``): the records before the damage, a gap record naming the lost
sequences and the damaged byte range, and the records after it that the frame
checks find again (format.py, "Resynchronisation").  Order, so that a crash
at any point leaves either the damaged ``.seg.open`` (recovered again on
the next start) or the finished ``.seg``:

1. write header + valid runs + gap records to ``<stem>.seg.tmp``, fsync it
   (a ``.tmp`` left by a crash is deleted at the next start);
2. check it by scanning it (it must be clean), write its index;
3. rename it to ``<stem>.seg``, fsync the directory;
4. unlink ``<stem>.seg.open``, fsync the directory.  A ``.seg.open`` found
   beside its ``.seg`` is the leftover of a crash between 3 and 4.

A damaged file header is rebuilt when every field it held can be checked
another way (``flusher/segments/salvage.py``: the file name against the
records, the ring identity from a neighbouring segment whose sequences the
records join); the segment is then rebuilt as above with the checked header,
and records lost with the header are one more hole.  Only a header that
cannot be rebuilt so still moves the file aside (``.corrupt``), with the
check that failed in the log line: without it the records cannot be
attributed to a ring.
"""
from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from typing import Callable

from flusher.segments.names import (O_CLOEXEC, O_DIRECTORY, O_NOFOLLOW, SUFFIX_CORRUPT, SUFFIX_IDX, SUFFIX_OPEN, SUFFIX_SEG, UnsafePath, parse_name)
from flusher.segments.format import (FILE_HEADER, Hole, ScanResult, gap_record, iter_stream_records, open_segment_stream, read_header, scan)
from flusher.segments.salvage import scan_damaged
from common.errors import CorruptSegment, SegmentError
from common.log import event as log_event

log = logging.getLogger("capture.flusher")

# -- recovery --------------------------------------------------------------------
@dataclass
class RecoveryReport:
    closed: list[str] = field(default_factory=list)        # open segments finished
    removed: list[str] = field(default_factory=list)       # empty open segments deleted
    truncated: list[tuple[str, int, int, str]] = field(default_factory=list)  # path, from, to, why
    corrupt: list[tuple[str, int, str]] = field(default_factory=list)          # new path, offset, why
    holes: list[tuple[str, Hole]] = field(default_factory=list)                # segment, damaged region
    last_seq: int = -1                                      # newest sequence on disk (same ring)
    last_ring_id: bytes | None = None


def _safe_fd(path: str, flags: int) -> int:
    return os.open(path, flags | O_NOFOLLOW | O_CLOEXEC)


def move_aside(path: str) -> str:
    """Rename a file to ``<name>.corrupt`` (``.corrupt.1``... if taken)."""
    target = path + SUFFIX_CORRUPT
    i = 0
    while os.path.lexists(target):
        i += 1
        target = f"{path}{SUFFIX_CORRUPT}.{i}"
    os.rename(path, target)
    dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return target


def recover_open(path: str, *, index_every: int = 1024,
                 on_corrupt: Callable[[str, int, str], None] | None = None,
                 on_hole: Callable[[str, Hole], None] | None = None) -> tuple[str, ScanResult | None]:
    """Recover one ``.seg.open`` left by a crash.

    Verifies every record; a torn tail (bad last record, nothing valid
    after it) is truncated away; then the segment is closed normally (index,
    fsync, rename).  Damaged regions in the middle are replaced by gap
    records and the valid records around them kept (module docstring);
    ``on_hole(final_path, hole)`` is called for each.  A bad file header
    moves the file aside as ``.corrupt`` and calls
    ``on_corrupt(new_path, offset, reason)``.

    Returns (outcome, scan) with outcome one of "closed", "repaired",
    "removed", "corrupt"; for "repaired" the scan is the one of the damaged
    file (its ``holes``, ``tail``).

    Raises:
        OSError: the disk refused a write (ENOSPC, EROFS...); the
            ``.seg.open`` is left as it was, to be recovered again.
    """
    from flusher.segments.index import IndexBuilder
    d = os.path.dirname(path)
    stem = os.path.basename(path)[:-len(SUFFIX_OPEN)]
    final = os.path.join(d, stem + SUFFIX_SEG)
    if os.path.lexists(final):
        # A crash between the rebuild's rename and the unlink of the damaged
        # file - if what is there is a segment file, not something planted.
        if not stat.S_ISREG(os.lstat(final).st_mode):
            raise UnsafePath(final, 0, "is not a regular file; refusing to finish the segment over it")
        log_event(log, "segment_already_finished", logging.WARNING, path=path, finished_as=final,
                  action="removing the damaged original")
        os.unlink(path)
        _fsync_dir(d)
        return "removed", None
    try:
        res = scan(path, index_every=index_every)
    except SegmentError as exc:
        size = os.lstat(path).st_size
        if size <= FILE_HEADER:
            # Crashed while writing the header: it never held a record.
            os.unlink(path)
            return "removed", None
        try:
            res = scan_damaged(path, exc, index_every=index_every)
        except SegmentError as why:
            new = move_aside(path)
            log_event(log, "segment_corrupt", logging.ERROR, path=path, problem="bad header",
                      reason=str(why), moved_to=new)
            if on_corrupt:
                on_corrupt(new, exc.offset, why.reason)
            return "corrupt", None
        log_event(log, "segment_header_damaged", logging.ERROR, path=path,
                  damage=res.header_damage.describe(), records=res.records,
                  from_offset=res.header_damage.first_off, kept_in=final)
    if res.holes or res.header_damage:
        _rebuild(path, res, index_every)
        for h in res.holes:
            log_event(log, "segment_damaged", logging.ERROR, path=path, bytes=f"{h.offset}..{h.end}",
                      reason=h.reason,
                      lost_seqs=f"{h.first_seq}..{h.last_seq}" if h.last_seq >= h.first_seq else "none",
                      recorded="as a gap record", kept_in=final,
                      kept="the records before and after the damage")
            if on_hole:
                on_hole(final, h)
        return "repaired", res
    fd = _safe_fd(path, os.O_RDWR)
    try:
        if res.valid_end < res.file_size:
            log_event(log, "torn_tail", logging.WARNING, path=path, offset=res.valid_end,
                      reason=res.problem.reason if res.problem else "trailing bytes",
                      truncated_bytes=res.file_size - res.valid_end)
            os.ftruncate(fd, res.valid_end)
        os.fsync(fd)
    finally:
        os.close(fd)
    if res.records == 0:
        os.unlink(path)
        return "removed", res
    dfd = os.open(d or ".", os.O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    try:
        ib = IndexBuilder.from_scan(res, index_every)
        ib.write(dfd, stem + SUFFIX_IDX, res.header, res.valid_end)
        os.rename(stem + SUFFIX_OPEN, stem + SUFFIX_SEG, src_dir_fd=dfd, dst_dir_fd=dfd)
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return "closed", res


def _fsync_dir(d: str) -> None:
    dfd = os.open(d or ".", os.O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _copy(src: int, dst: int, start: int, end: int, at: int) -> int:
    """Copy src[start:end) to dst at offset ``at``; returns the new end offset in dst."""
    while start < end:
        n = os.copy_file_range(src, dst, end - start, start, at)
        if n <= 0:
            raise OSError(f"short copy at offset {start}")
        start += n
        at += n
    return at


def _ts_at(fd: int, off: int) -> int:
    """The receive time of the record at off (the gap record takes the time of a neighbour,
    so receive times keep their order)."""
    return int.from_bytes(os.pread(fd, 8, off + 16), "little", signed=True)


def _rebuild(path: str, res: ScanResult, index_every: int) -> None:
    """Write the valid records of a damaged open segment, with a gap record for
    each hole, as its closed segment (module docstring: the order of steps)."""
    from flusher.segments.index import IndexBuilder
    d = os.path.dirname(path) or "."
    stem = os.path.basename(path)[:-len(SUFFIX_OPEN)]
    tmp = stem + ".seg.tmp"
    src = _safe_fd(path, os.O_RDONLY)
    dfd = os.open(d, os.O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    try:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except FileNotFoundError:
            pass
        dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600, dir_fd=dfd)
        try:
            first_hole = res.holes[0].offset if res.holes else res.valid_end
            damage = res.header_damage
            if damage is None:
                at = _copy(src, dst, 0, first_hole, 0)             # header and the valid prefix
            else:
                # The damaged header is replaced by the one rebuilt from checks.
                os.pwrite(dst, res.header.encode(), 0)
                at = _copy(src, dst, FILE_HEADER, first_hole, FILE_HEADER)
            for i, h in enumerate(res.holes):
                if h.last_seq >= h.first_seq:
                    ts = _ts_at(src, h.end)
                    extra = {"header": f"damaged: {damage.reason}"} if damage and h.offset == FILE_HEADER else {}
                    rec = gap_record(h.first_seq, h.last_seq, ts, segment=os.path.basename(path),
                                     offset=h.offset, bytes=h.end - h.offset, reason=h.reason,
                                     source="recovery", **extra)
                    os.pwrite(dst, rec, at)
                    at += len(rec)
                run_end = res.holes[i + 1].offset if i + 1 < len(res.holes) else res.valid_end
                at = _copy(src, dst, h.end, run_end, at)
            os.fsync(dst)
        finally:
            os.close(dst)
        tmp_path = os.path.join(d, tmp)
        check = scan(tmp_path, index_every=index_every)
        if check.problem is not None or check.valid_end != check.file_size:
            raise CorruptSegment(tmp_path, check.problem.offset if check.problem else check.valid_end,
                                 "the rebuilt segment does not check clean; the original is left as it was")
        IndexBuilder.from_scan(check, index_every).write(dfd, stem + SUFFIX_IDX, check.header,
                                                         check.valid_end)
        os.rename(tmp, stem + SUFFIX_SEG, src_dir_fd=dfd, dst_dir_fd=dfd)
        os.fsync(dfd)
        os.unlink(stem + SUFFIX_OPEN, dir_fd=dfd)
        os.fsync(dfd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
        raise
    finally:
        os.close(src)
        os.close(dfd)


def last_on_disk(path: str) -> tuple[bytes, int]:
    """(ring_id, last sequence) of a closed segment: from its index, else by reading it."""
    from flusher.segments.index import load_index
    sn = parse_name(path)
    if sn is not None:
        stem = path[: -len(sn.suffix)]
        idx = load_index(stem + SUFFIX_IDX)
        if idx is not None:
            return idx.ring_id, idx.last_seq
    hdr = read_header(path)
    last = -1
    with open_segment_stream(path) as f:
        f.read(FILE_HEADER)
        for _off, h, _payload in iter_stream_records(f, path):
            last = h[2]
    return hdr.ring_id, last
