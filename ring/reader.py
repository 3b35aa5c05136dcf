"""Readers: named cursors over a ring, tethered or untethered.

A *tethered* reader (the flusher) holds the producer back: nothing it has not
committed is overwritten, and when it is slow the producer drops new frames
(counted, with a gap record) rather than old ones.  An *untethered* reader
(the publisher) never slows the producer and may be lapped; it then gets
:class:`~common.errors.Lapped` and can resume at the oldest frame still held.

A reader has a name and a slot in the ring header.  A reader that restarts
with the same name resumes from its committed position, so frames it read
but did not commit are delivered again: commit only after the work is done.

Batches hand out zero-copy memoryviews into the shared mapping and numpy
arrays of metadata.  A batch is valid until the next ``read`` on the same
reader.  For an untethered reader the bytes may be overwritten at any time:
use them (copy them out), then call :meth:`Reader.check`, which raises
``Lapped`` if the producer may have touched them meanwhile.
"""
from __future__ import annotations

import os
import time
from typing import Iterator, NamedTuple

import numpy as np

from ring._ringlib import ffi, lib
from common.errors import CorruptFrame, Lapped, NoReaderSlot, ReaderBusy, RingError
from ring.file import HEADER_SIZE, MAX_READERS, RingFile, _LOCK_REGISTRY, attach, lock_byte_for_reader

_HDR = lib.RING_FRAME_HEADER
_LAPPED = lib.RING_READ_LAPPED
_TIMEOUT = lib.RING_READ_TIMEOUT


class Frame(NamedTuple):
    seq: int
    ts: int
    type: int
    flags: int
    conn: int
    payload: memoryview


class Batch:
    """Frames from one ``read``: metadata arrays plus zero-copy payloads."""

    __slots__ = ("_rd", "n", "start_pos", "start_seq", "end_pos", "end_seq")

    def __init__(self, rd: "Reader", n: int, start_pos: int, start_seq: int,
                 end_pos: int, end_seq: int) -> None:
        self._rd = rd
        self.n = n
        self.start_pos = start_pos
        self.start_seq = start_seq
        self.end_pos = end_pos
        self.end_seq = end_seq

    def __len__(self) -> int:
        return self.n

    @property
    def pos(self) -> np.ndarray:
        return self._rd._a_pos[: self.n]

    @property
    def seq(self) -> np.ndarray:
        return self._rd._a_seq[: self.n]

    @property
    def ts(self) -> np.ndarray:
        return self._rd._a_ts[: self.n]

    @property
    def type(self) -> np.ndarray:
        return self._rd._a_type[: self.n]

    @property
    def flags(self) -> np.ndarray:
        return self._rd._a_flags[: self.n]

    @property
    def conn(self) -> np.ndarray:
        return self._rd._a_conn[: self.n]

    @property
    def length(self) -> np.ndarray:
        return self._rd._a_size[: self.n]

    def payload(self, i: int) -> memoryview:
        rd = self._rd
        off = HEADER_SIZE + (int(rd._a_pos[i]) & rd._mask) + _HDR
        return rd._mv[off: off + int(rd._a_size[i])]

    def payloads(self) -> list[bytes]:
        """Copies of every payload of the batch, in order (what a reader
        that keeps frames past its commit needs), without a Python-level
        index into the arrays per frame."""
        rd = self._rd
        n, mv, mask = self.n, rd._mv, rd._mask
        base = HEADER_SIZE + _HDR
        return [mv[o: o + z].tobytes() for o, z in
                zip(((p & mask) + base for p in rd._a_pos[:n].tolist()), rd._a_size[:n].tolist())]

    def raw(self, i: int) -> memoryview:
        """The frame exactly as stored: header, payload, padding to 8 bytes."""
        rd = self._rd
        off = HEADER_SIZE + (int(rd._a_pos[i]) & rd._mask)
        return rd._mv[off: off + ((_HDR + int(rd._a_size[i]) + 7) & ~7)]

    def __iter__(self) -> Iterator[Frame]:
        rd = self._rd
        mv, mask = rd._mv, rd._mask
        n = self.n   # the arrays are max_frames long: convert only the batch
        pos, size, seq, ts = (rd._a_pos[:n].tolist(), rd._a_size[:n].tolist(),
                              rd._a_seq[:n].tolist(), rd._a_ts[:n].tolist())
        typ, fl, conn = rd._a_type[:n].tolist(), rd._a_flags[:n].tolist(), rd._a_conn[:n].tolist()
        for i in range(n):
            off = HEADER_SIZE + (pos[i] & mask) + _HDR
            yield Frame(seq[i], ts[i], typ[i], fl[i], conn[i], mv[off: off + size[i]])

    def spans(self) -> list[memoryview]:
        """The batch's raw frame bytes as few contiguous views as possible.

        Padding frames (and the skipped tail of the ring) are left out, so
        writing these views in order gives exactly the segment-file records.
        """
        if not self.n:
            return []
        rd = self._rd
        pos = rd._a_pos[: self.n]
        ends = pos + ((_HDR + rd._a_size[: self.n].astype(np.uint64) + 7) & ~np.uint64(7))
        # A run breaks where frames are not adjacent (padding, skipped tail)
        # and where a frame starts at offset 0: adjacent in position space,
        # but the bytes before it sit at the other end of the mapping.
        breaks = np.flatnonzero((pos[1:] != ends[:-1]) | ((pos[1:] & np.uint64(rd._mask)) == 0)) + 1
        out = []
        starts = [0, *breaks.tolist()]
        stops = [*breaks.tolist(), self.n]
        for a, b in zip(starts, stops):
            p0 = HEADER_SIZE + (int(pos[a]) & rd._mask)
            length = int(ends[b - 1]) - int(pos[a])
            out.append(rd._mv[p0: p0 + length])
        return out


class Reader:
    """A named cursor over a ring.

    Args:
        path: ring file.
        name: identifies the cursor across restarts (at most 47 bytes).
        tethered: True for readers that must see every frame (the flusher).
        start: for a *new* name: "head" (frames from now on) or "oldest"
            (untethered only: the oldest frame still in the ring).
        max_frames: frames per batch at most.
        verify_crc: check each frame's CRC32C while reading.
        spin_us: how long ``wait`` spins before yielding and sleeping; 0:
            neither spin nor yield, sleep on the futex at once.
        linger_us: after ``wait`` had to sleep for a frame, how long it
            sleeps on before returning, so that a batch builds (see
            :meth:`wait`).  ``read(timeout=...)``, the latency path, never
            lingers.

    Raises:
        ReaderBusy: a live process holds this name.
        NoReaderSlot: all slots are taken.
    """

    def __init__(self, path: str, name: str, *, tethered: bool, start: str = "head",
                 max_frames: int = 4096, max_bytes: int | None = None,
                 verify_crc: bool = False, spin_us: float = 50.0,
                 linger_us: float = 0.0) -> None:
        if not name or len(name.encode()) > lib.RING_NAME_MAX:
            raise ValueError(f"reader name must be 1..{lib.RING_NAME_MAX} bytes")
        if start not in ("head", "oldest"):
            raise ValueError("start must be 'head' or 'oldest'")
        if start == "oldest" and tethered:
            raise ValueError("a tethered reader cannot start at the oldest frame: "
                             "the producer may already be overwriting it")
        self._rf: RingFile = attach(path)
        self.path, self.name, self.tethered = path, name, tethered
        self.verify_crc = 1 if verify_crc else 0
        self.spin_ns = int(spin_us * 1000)
        self.linger = linger_us / 1e6
        self._base = self._rf.base
        self._mv = memoryview(self._rf.mm)
        self._mask = self._rf.mask
        self.capacity = self._rf.capacity
        self._posp = ffi.new("uint64_t[1]")
        self._seqp = ffi.new("uint64_t[1]")
        try:
            self.slot, self.resumed = self._register(start)
        except BaseException:
            self._mv.release()
            self._rf.close()
            raise
        # Batch arrays, reused by every read (a Batch is valid until the next).
        self.max_frames = max_frames
        self._a_pos = np.zeros(max_frames, np.uint64)
        self._a_size = np.zeros(max_frames, np.uint32)
        self._a_seq = np.zeros(max_frames, np.uint64)
        self._a_ts = np.zeros(max_frames, np.int64)
        self._a_type = np.zeros(max_frames, np.uint8)
        self._a_flags = np.zeros(max_frames, np.uint8)
        self._a_conn = np.zeros(max_frames, np.uint16)
        out = ffi.new("ring_batch_t *")
        out.pos = ffi.cast("uint64_t *", ffi.from_buffer(self._a_pos))
        out.size = ffi.cast("uint32_t *", ffi.from_buffer(self._a_size))
        out.seq = ffi.cast("uint64_t *", ffi.from_buffer(self._a_seq))
        out.ts = ffi.cast("int64_t *", ffi.from_buffer(self._a_ts))
        out.type = ffi.cast("uint8_t *", ffi.from_buffer(self._a_type))
        out.flags = ffi.cast("uint8_t *", ffi.from_buffer(self._a_flags))
        out.conn = ffi.cast("uint16_t *", ffi.from_buffer(self._a_conn))
        out.max_frames = max_frames
        out.max_bytes = max_bytes or self.capacity
        self._out = out
        self._uncommitted = 0
        self.lapped_count = 0

    # -- registration --------------------------------------------------------
    def _register(self, start: str) -> tuple[int, bool]:
        rf = self._rf
        info = ffi.new("ring_reader_info_t *")
        rf.lock_wait(_LOCK_REGISTRY)
        try:
            free = -1
            for s in range(MAX_READERS):
                lib.ring_reader_get(self._base, s, info)
                if info.state == lib.RING_SLOT_ACTIVE and ffi.string(info.name).decode() == self.name:
                    if not rf.try_lock(lock_byte_for_reader(s)):
                        raise ReaderBusy(self.path, self.name, info.pid)
                    if bool(info.tethered) != self.tethered:
                        rf.unlock(lock_byte_for_reader(s))
                        raise RingError(f"{self.path}: reader {self.name!r} exists as "
                                        f"{'tethered' if info.tethered else 'untethered'}; "
                                        "remove it (ring.remove_reader) to change that")
                    lib.ring_reader_set_pid(self._base, s, os.getpid(), time.time_ns())
                    self._posp[0], self._seqp[0] = info.pos, info.seq
                    return s, True
                if free < 0 and info.state == lib.RING_SLOT_FREE and not rf.is_locked(lock_byte_for_reader(s)):
                    free = s
            if free < 0:
                raise NoReaderSlot(self.path, MAX_READERS)
            if not rf.try_lock(lock_byte_for_reader(free)):
                raise NoReaderSlot(self.path, MAX_READERS)
            rf.head(self._posp, self._seqp)
            if start == "oldest":
                lib.ring_resume_point(self._base, self._posp, self._seqp)
            if lib.ring_reader_claim(self._base, free, self.name.encode(), int(self.tethered),
                                     os.getpid(), self._posp[0], self._seqp[0], time.time_ns()) < 0:
                rf.unlock(lock_byte_for_reader(free))
                raise NoReaderSlot(self.path, MAX_READERS)
            if self.tethered:
                # Re-read head now that the producer can see us: any limit it
                # computed before the claim is <= this head + capacity.
                rf.head(self._posp, self._seqp)
                lib.ring_reader_commit(self._base, free, self._posp[0], self._seqp[0], 0, 0)
            return free, False
        finally:
            rf.unlock(_LOCK_REGISTRY)

    # -- reading ---------------------------------------------------------------
    @property
    def position(self) -> int:
        """Position of the next frame to read (not necessarily committed)."""
        return int(self._posp[0])

    @property
    def next_seq(self) -> int:
        return int(self._seqp[0])

    def read(self, timeout: float | None = None) -> Batch:
        """Up to ``max_frames`` published frames; an empty batch if none.

        With a ``timeout`` (seconds) it first waits like :meth:`wait`, in the
        same C call: the low-latency way to follow a live ring.  An empty
        batch then means the timeout passed.

        Raises:
            Lapped: (untethered) the producer overwrote what this reader had
                not read yet.
            CorruptFrame: a frame failed validation.
        """
        base, posp, seqp = self._base, self._posp, self._seqp
        pos0, seq0 = posp[0], seqp[0]
        if timeout is not None:
            st = lib.ring_wait_read(base, self.slot, posp, seqp, self._out, self.verify_crc,
                                    self.spin_ns, int(timeout * 1e9))
            if st == _TIMEOUT:
                return Batch(self, 0, pos0, seq0, pos0, seq0)
        else:
            if not self.tethered and not lib.ring_still_valid(base, pos0):
                self._raise_lapped(pos0, seq0)
            st = lib.ring_read_batch(base, posp, seqp, self._out, self.verify_crc)
        n = self._out.n
        if st:
            if st == _LAPPED:
                posp[0], seqp[0] = pos0, seq0
                self._raise_lapped(pos0, seq0)
            if n == 0:
                if not self.tethered and not lib.ring_still_valid(base, pos0):
                    posp[0], seqp[0] = pos0, seq0   # overwritten while we walked: a lap
                    self._raise_lapped(pos0, seq0)
                raise CorruptFrame(self.path, self._out.bad_pos, self._out.bad_seq,
                                   "CRC, size or sequence check failed")
            # Hand out the good frames first; the next read raises.
        self._uncommitted += n
        return Batch(self, n, pos0, seq0, posp[0], seqp[0])

    def check(self, batch: Batch) -> None:
        """Untethered readers: raise Lapped if the batch's bytes may have been
        overwritten since it was read.  Call after using (copying) them."""
        if not self.tethered and not lib.ring_still_valid(self._base, batch.start_pos):
            self._posp[0], self._seqp[0] = batch.start_pos, batch.start_seq
            self._raise_lapped(batch.start_pos, batch.start_seq)

    def _raise_lapped(self, pos: int, seq: int) -> None:
        self.lapped_count += 1
        lib.ring_reader_count_lapped(self._base, self.slot)
        rp, rs = ffi.new("uint64_t[1]"), ffi.new("uint64_t[1]")
        lib.ring_resume_point(self._base, rp, rs)
        raise Lapped(self.name, int(pos), int(seq), int(rp[0]), int(rs[0]))

    def resume_oldest(self) -> tuple[int, int]:
        """After Lapped: continue at the oldest frame still in the ring.

        Returns (position, sequence) resumed at.  Frames between the lap point
        and this sequence are gone from the ring (the publisher reads them
        from the segment files)."""
        lib.ring_resume_point(self._base, self._posp, self._seqp)
        return int(self._posp[0]), int(self._seqp[0])

    def seek(self, pos: int, seq: int) -> None:
        """Move the read cursor (not the committed one) to a frame boundary."""
        self._posp[0], self._seqp[0] = pos, seq

    def rewind(self) -> None:
        """Go back to the committed position (redeliver what was not committed)."""
        info = self.info()
        self._posp[0], self._seqp[0] = info.pos, info.seq

    def commit(self, batch: Batch | None = None) -> None:
        """Commit the cursor after ``batch`` (default: everything read so far)."""
        if batch is None:
            pos, seq = self._posp[0], self._seqp[0]
        else:
            pos, seq = batch.end_pos, batch.end_seq
        lib.ring_reader_commit(self._base, self.slot, pos, seq, self._uncommitted, time.time_ns())
        self._uncommitted = 0

    def commit_to(self, pos: int, seq: int) -> None:
        """Commit an explicit frame boundary (e.g. the last acknowledged one)."""
        lib.ring_reader_commit(self._base, self.slot, pos, seq, 0, time.time_ns())

    def wait(self, timeout: float) -> bool:
        """Block until a frame is available at the read cursor (True) or the
        timeout passes (False).  Spins, then yields, then sleeps on a futex.

        Linger: a drain that wakes for every frame spends a wake-up (the
        producer's futex call, two context switches, a pass through its own
        loop) per frame whenever frames arrive slower than it reads them,
        on cores it shares with the processes it feeds.  With ``linger_us``
        set, a wait that had to sleep returns only after that much longer,
        so such a reader wakes at most about 1 / linger times a second and
        reads what arrived meanwhile as one batch; the price is at most
        ``linger_us`` of added latency.  A reader that finds a frame
        waiting (the ring is never empty at high rates) does not linger."""
        lib.ring_reader_heartbeat(self._base, self.slot, time.time_ns())
        base, pos, seq = self._base, self._posp[0], self._seqp[0]
        if lib.ring_available(base, pos, seq):
            return True
        ok = bool(lib.ring_wait(base, self.slot, pos, seq, self.spin_ns, int(timeout * 1e9)))
        if ok and self.linger:
            time.sleep(self.linger)
        return ok

    def available(self) -> bool:
        return bool(lib.ring_available(self._base, self._posp[0], self._seqp[0]))

    def heartbeat(self) -> None:
        lib.ring_reader_heartbeat(self._base, self.slot, time.time_ns())

    # -- state of the producer -------------------------------------------------
    def producer_stopped(self) -> bool:
        """The producer closed cleanly, or died (ran, and its lock is free).

        A ring whose producer never started is not "stopped": a drain
        started first waits for it."""
        state = self._rf.stats_struct().producer_state
        if state == lib.RING_PROD_STOPPED:
            return True
        return state == lib.RING_PROD_RUNNING and not self._rf.is_locked(0)

    def lag(self) -> int:
        """Bytes between the producer's head and this reader's read cursor."""
        p, s = ffi.new("uint64_t[1]"), ffi.new("uint64_t[1]")
        self._rf.head(p, s)
        return int(p[0] - self._posp[0])

    def head_seq(self) -> int:
        """The sequence the producer's next frame will carry."""
        p, s = ffi.new("uint64_t[1]"), ffi.new("uint64_t[1]")
        self._rf.head(p, s)
        return int(s[0])

    def drained(self) -> bool:
        """Everything published so far has been read."""
        p, s = ffi.new("uint64_t[1]"), ffi.new("uint64_t[1]")
        self._rf.head(p, s)
        return int(s[0]) == int(self._seqp[0])

    def info(self):  # -> ring_reader_info_t
        info = ffi.new("ring_reader_info_t *")
        lib.ring_reader_get(self._base, self.slot, info)
        return info

    @property
    def ring_id(self) -> bytes:
        return self._rf.info.ring_id

    def close(self) -> None:
        """Release the name (the slot and committed position stay)."""
        if self._rf.fd < 0:
            return
        try:
            self._mv.release()
        except BufferError:
            pass  # a caller still holds a payload view; the mapping outlives us
        self._rf.close()

    def remove(self) -> None:
        """Forget this reader: free the slot; a tethered cursor stops holding
        the producer back."""
        lib.ring_reader_release(self._base, self.slot)
        self.close()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
