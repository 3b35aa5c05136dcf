"""Recovery of segment files after a crash, and what is already on disk.

On start the flusher verifies its open segment (``recover_open``): a torn
tail is cut off and the segment closed; a bad record followed by valid ones
is corruption, and the file is moved aside (``.corrupt``); ``last_on_disk``
tells which ring sequence the newest segment ends with, so frames already
written are not written twice.  The format itself is in ``flusher/segments/format.py``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Callable

from flusher.segments.names import (O_CLOEXEC, O_DIRECTORY, O_NOFOLLOW, SUFFIX_CORRUPT, SUFFIX_IDX, SUFFIX_OPEN, SUFFIX_SEG, parse_name)
from flusher.segments.format import (FILE_HEADER, ScanResult, iter_stream_records, open_segment_stream, read_header, scan)
from common.errors import SegmentError

log = logging.getLogger("capture.flusher")

# -- recovery --------------------------------------------------------------------
@dataclass
class RecoveryReport:
    closed: list[str] = field(default_factory=list)        # open segments finished
    removed: list[str] = field(default_factory=list)       # empty open segments deleted
    truncated: list[tuple[str, int, int, str]] = field(default_factory=list)  # path, from, to, why
    corrupt: list[tuple[str, int, str]] = field(default_factory=list)          # new path, offset, why
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
                 on_corrupt: Callable[[str, int, str], None] | None = None) -> tuple[str, ScanResult | None]:
    """Recover one ``.seg.open`` left by a crash.

    Verifies every record; a torn tail (bad last record, nothing valid
    after it) is truncated away; then the segment is closed normally (index,
    fsync, rename).  A bad record in the middle moves the file aside as
    ``.corrupt`` and calls ``on_corrupt(new_path, offset, reason)``.

    Returns (outcome, scan) with outcome one of "closed", "removed", "corrupt".
    """
    from flusher.segments.index import IndexBuilder
    try:
        res = scan(path, index_every=index_every)
    except SegmentError as exc:
        size = os.lstat(path).st_size
        if size <= FILE_HEADER:
            # Crashed while writing the header: it never held a record.
            os.unlink(path)
            return "removed", None
        new = move_aside(path)
        log.error("SEGMENT CORRUPT: %s has a bad header (%s); moved aside to %s", path, exc, new)
        if on_corrupt:
            on_corrupt(new, exc.offset, exc.reason)
        return "corrupt", None
    if res.problem is not None and res.problem.kind == "corrupt":
        new = move_aside(path)
        log.error("SEGMENT CORRUPT: %s: bad record at offset %d (%s) with valid records after it; "
                  "moved aside to %s", path, res.problem.offset, res.problem.reason, new)
        if on_corrupt:
            on_corrupt(new, res.problem.offset, res.problem.reason)
        return "corrupt", res
    fd = _safe_fd(path, os.O_RDWR)
    try:
        if res.valid_end < res.file_size:
            log.warning("segment %s: torn tail at offset %d (%s); truncating %d bytes",
                        path, res.valid_end, res.problem.reason if res.problem else "trailing bytes",
                        res.file_size - res.valid_end)
            os.ftruncate(fd, res.valid_end)
        os.fsync(fd)
    finally:
        os.close(fd)
    if res.records == 0:
        os.unlink(path)
        return "removed", res
    d = os.path.dirname(path)
    stem = os.path.basename(path)[:-len(SUFFIX_OPEN)]
    dfd = os.open(d or ".", os.O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    try:
        ib = IndexBuilder.from_scan(res, index_every)
        ib.write(dfd, stem + SUFFIX_IDX, res.header, res.valid_end)
        os.rename(stem + SUFFIX_OPEN, stem + SUFFIX_SEG, src_dir_fd=dfd, dst_dir_fd=dfd)
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return "closed", res


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
