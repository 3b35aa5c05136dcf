"""A tethered reader's drain into a file: ring bytes to disk in one C call per batch.

The flusher's records are ring frames byte for byte, so a batch need not
pass through Python at all: :meth:`FileDrain.write` writes the frames at
the reader's cursor to a file offset, padding left out, and checks every
one of them as :meth:`ring.Reader.read` does, in one C call (csrc/drain.c:
a backlog is written first and checked piece by piece while the copy has
it in cache; what fails a check is cut off the file before the call
returns).  It returns a :class:`Drained` summary (counts, sequence and
receive-time range, the index entries) instead of per-frame arrays.

Like ``read``, it advances the read cursor and never commits: call
``reader.commit()`` once the bytes are where they must be.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from ring._ringlib import ffi, lib
from common.errors import CorruptFrame
from ring.reader import Reader

HIST_BUCKETS = lib.RING_DRAIN_HIST


class Drained(NamedTuple):
    """What one :meth:`FileDrain.write` did.

    ``frames`` were written (``nbytes`` bytes from the given offset),
    ``skipped`` frames were consumed without writing (below ``skip_below``).
    ``index_*`` hold the entries for every ``index_every``-th record of the
    file (absolute offsets), as lists.
    ``room_full``: the batch stopped at a frame that does not fit in
    ``room``.  ``written_first``: the batch was written, then checked
    (csrc/drain.c); otherwise it was checked, then written.
    """
    frames: int
    skipped: int
    nbytes: int
    first_seq: int
    last_seq: int
    first_ts: int
    last_ts: int
    min_ts: int
    max_ts: int
    ts_monotonic: bool
    room_full: bool
    written_first: bool
    index_seq: list[int]
    index_ts: list[int]
    index_off: list[int]


class FileDrain:
    """Writes a tethered reader's frames straight from the ring into files.

    A batch is at most ``max_bytes`` of file bytes.  ``latency_hist``
    accumulates, over every call, the time from a frame's receive stamp to
    its write returning, sampled (the first 64 frames of a call, then every
    16th), in log2 microsecond buckets (bucket i: below 2**i us), as
    ``common.histogram`` counts them.
    """

    def __init__(self, reader: Reader, *, max_bytes: int, index_every: int) -> None:
        if not reader.tethered:
            raise ValueError("only a tethered reader can drain to a file "
                             "(an untethered one may be overwritten while the write copies)")
        self._rd = reader
        self.index_every = max(1, int(index_every))
        # Enough index entries for a batch of the smallest frames.
        cap = max_bytes // lib.RING_FRAME_HEADER // self.index_every + 2
        self._seq = ffi.new("uint64_t[]", cap)
        self._ts = ffi.new("int64_t[]", cap)
        self._off = ffi.new("uint64_t[]", cap)
        self.latency_hist = np.zeros(HIST_BUCKETS, np.uint64)
        d = ffi.new("ring_drain_t *")
        d.max_bytes = max_bytes
        d.index_every = self.index_every
        d.index_cap = cap
        d.index_seq = self._seq
        d.index_ts = self._ts
        d.index_off = self._off
        d.latency_hist = ffi.cast("uint64_t *", ffi.from_buffer(self.latency_hist))
        self._d = d

    def write(self, fd: int, offset: int, room: int, *, oversize_ok: bool = False,
              records_before: int = 0, skip_below: int = 0, path: str = "") -> Drained:
        """Write the frames available at the reader's cursor to ``fd`` at ``offset``.

        At most ``room`` bytes, except one first frame larger than that when
        ``oversize_ok``; frames with a sequence below ``skip_below`` are
        consumed without being written.  ``fd`` < 0 writes nothing: only
        those frames are consumed.  ``records_before`` (records already in
        the file) places the index entries.  The file may be truncated to
        ``offset`` + the bytes written (see csrc/drain.c: a large batch is
        written first and checked after, and what fails is cut off).

        Raises:
            OSError: the write failed; the cursor did not move, and bytes of
                this call may be in the file past ``offset`` (truncate them).
            CorruptFrame: the frame at the cursor failed validation.
        """
        rd, d = self._rd, self._d
        d.fd = fd
        d.file_off = offset
        d.room = room
        d.oversize_ok = 1 if oversize_ok else 0
        d.skip_below = skip_below
        d.records_before = records_before
        st = lib.ring_drain_to_fd(rd._base, rd._posp, rd._seqp, d)
        if st == lib.RING_DRAIN_IO_ERROR:
            err = int(d.err)
            raise OSError(err, os.strerror(err) if err else "write failed", path or None)
        n = int(d.frames)
        if st and n == 0 and d.skipped == 0:
            # A tethered reader is never lapped: any bad frame is corruption.
            raise CorruptFrame(rd.path, int(d.bad_pos), int(d.bad_seq),
                               "size or sequence check failed" if st != lib.RING_READ_LAPPED
                               else "a newer frame where the next was expected")
        rd._uncommitted += n + int(d.skipped)
        k = int(d.index_n)
        return Drained(n, int(d.skipped), int(d.bytes), int(d.first_seq) if n else -1,
                       int(d.last_seq) if n else -1, int(d.first_ts), int(d.last_ts),
                       int(d.min_ts), int(d.max_ts), bool(d.ts_monotonic), bool(d.room_full),
                       bool(d.written_first), ffi.unpack(self._seq, k), ffi.unpack(self._ts, k),
                       ffi.unpack(self._off, k))


__all__ = ["FileDrain", "Drained", "HIST_BUCKETS"]
