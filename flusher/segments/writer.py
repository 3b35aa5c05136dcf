"""The segment writer: one open segment, appended to straight from the ring,
closed by fsync + index + rename + directory fsync.  The format is in
``flusher/segments/format.py``, the names and directories in ``flusher/segments/names.py``.
"""
from __future__ import annotations

import errno
import os
import socket

from flusher.segments.index import IndexBuilder
from flusher.segments.names import (FILE_MODE, O_CLOEXEC, O_NOFOLLOW, SUFFIX_IDX, SUFFIX_OPEN, SUFFIX_SEG, day_dir_name, open_dir, segment_stem, with_path)
from flusher.segments.format import FILE_HEADER, SegmentHeader

try:
    _IOV_MAX = min(1024, os.sysconf("SC_IOV_MAX"))
except (ValueError, OSError, AttributeError):
    _IOV_MAX = 1024


class SegmentWriter:
    """One open segment: appended to with pwrite, closed by fsync + rename + dir fsync.

    The writer keeps ``size`` = the bytes known good.  A failed write (ENOSPC,
    EIO) truncates the file back to ``size`` so the file never holds a partial
    record the writer knows about; the caller retries the same bytes later.
    """

    def __init__(self, root: str, header: SegmentHeader, *, index_every: int = 1024) -> None:
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
                               os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                               FILE_MODE, dir_fd=self._dfd)
        except OSError as exc:
            os.close(self._dfd)
            raise with_path(exc, self.dir) from exc
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
        close the descriptors without finishing (flusher.segments.recovery.recover_open does that).

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


def default_host() -> str:
    return socket.gethostname()


def writer_header(venue: str, shard: int, ring_id: bytes, created_ns: int, first_seq: int,
                  host: str | None = None) -> SegmentHeader:
    return SegmentHeader(venue, shard, host or default_host(), ring_id, created_ns, first_seq)


__all__ = ["SegmentWriter", "writer_header", "default_host"]
