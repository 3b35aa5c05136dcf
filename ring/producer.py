"""The producer: the one process that writes a ring (the receiver).

``write`` never blocks on a full ring: it returns ``WriteStatus.FULL`` and the
drop is counted in the shared header.  Lost frames are then summarised by one
gap record (a control frame: count, bytes, first/last lost receive time) as
soon as the ring has room again - on the next ``write`` or ``poll`` - so a
drop is always visible in the capture itself, not only in a metric.

Frames above the fragment limit (capacity / 8) travel as a chain of
FRAG_BEGIN / FRAG_MIDDLE... / FRAG_END frames.  A chain may need more room
than is free at the moment it starts, so writing one waits - at most
``frag_timeout`` seconds per fragment, polling for the readers to make room -
and if that runs out the frame is dropped and counted (a chain already
started is closed by an ABORTED FRAG_END).
This is the only place ``write`` can wait; frames up to the fragment limit
(512 KiB for a 4 MiB ring) never do.  Frames above ``max_frame`` are refused
with ``TOO_LARGE`` and an ``oversize`` control record.

A caller with a hot path of its own (the receiver's connections) may call the
C write directly through ``raw_write``/``handle``, skipping ``write``'s Python
layer, and fall back to ``write`` for anything it does not take (see
``Producer.raw_write``).

Gap accounting that survives any stop or crash
----------------------------------------------
The ring header counts the frames refused (``drops_full`` +
``drops_too_large``) and, beside them, the frames already written as records
(``drops_recorded``: the ``count`` of each drop record, one per oversize
record).  The difference is owed to the capture.  A producer pays it in its
own drop record once room returns; one that closes or dies before that leaves
it in the header, and the next producer to open the ring - the restarted
receiver, or the supervisor at a stop with the receiver dead - writes it
before anything else, as a drop record with ``reasons: {"unrecorded": n}``.

Ordinary writes leave a reserve (``reserve`` bytes) free that only the
records which must land may use (``ring_write_reserved``): the drop record
owed at open or close, ``producer_restart``, the ``producer_died`` gap and a
``write_control(..., reserved=True)`` such as ``shard_stop``.  Records that
find even the reserve gone wait, in order and ahead of every other frame,
for room; the drop counts among them are still in the header if the
producer dies before then.
"""
from __future__ import annotations

import enum
import logging
import os
import time
from typing import Any, Callable

import orjson

from ring._ringlib import ffi, lib
from common.errors import ProducerBusy
from common.log import event as log_event
from ring.file import RingFile, attach
from ring.frame import FrameFlags, FrameType

log = logging.getLogger("capture.ring")

_LOCK_PRODUCER = 0
#: Bytes ordinary writes leave free for the records that must land (a ring of
#: capacity C keeps max(4 KiB, C / 256), at most C / 16).
RESERVE_MIN = 4096


class WriteStatus(enum.IntEnum):
    OK = 0
    FULL = 1
    TOO_LARGE = 2


_OK, _FULL, _TOO_LARGE = WriteStatus.OK, WriteStatus.FULL, WriteStatus.TOO_LARGE
_DATA = int(FrameType.DATA)
_CONTROL = int(FrameType.CONTROL)


class _PendingGap:
    __slots__ = ("count", "bytes", "first_ns", "last_ns", "reasons")

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self.first_ns = 0
        self.last_ns = 0
        self.reasons: dict[str, int] = {}

    def add(self, reason: str, nbytes: int, ts: int) -> None:
        if not self.count:
            self.first_ns = ts
        self.count += 1
        self.bytes += nbytes
        self.last_ns = ts
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


class Producer:
    """Writes frames into a ring.  One per ring: a second live one is refused.

    A producer that restarts on an existing ring continues its sequence
    numbers and records a ``producer_restart`` control frame.

    Args:
        path: the ring file (see :func:`ring.create`).
        frag_timeout: seconds a fragmented (very large) frame may wait for room.
    """

    def __init__(self, path: str, *, frag_timeout: float = 1.0, reserve: int | None = None) -> None:
        self._rf: RingFile = attach(path)
        if not self._rf.try_lock(_LOCK_PRODUCER):
            pid = self._rf.stats_struct().producer_pid
            self._rf.close()
            raise ProducerBusy(path, pid)
        self.path = path
        prev = self._rf.stats_struct()
        unclean = prev.producer_state == lib.RING_PROD_RUNNING
        prev_pid, prev_hb = int(prev.producer_pid), int(prev.producer_heartbeat_ns)
        owed = int(prev.drops_full + prev.drops_too_large - prev.drops_recorded)
        owed_since = int(prev.gap_since_ns)
        self._p = ffi.new("ring_producer_t *")
        self.epoch: int = lib.ring_producer_open(self._p, self._rf.base, os.getpid(), time.time_ns())
        cap = self._rf.capacity
        self._p.reserve = min(cap // 16, max(RESERVE_MIN, cap // 256) if reserve is None else reserve)
        self._write = lib.ring_write
        self._pp = self._p
        #: The C write, for a caller's own hot path:
        #: ``raw_write(handle, payload, len(payload), type, flags, conn, ts)``
        #: with ``payload`` a ``bytes`` object (passed to C without a copy).
        #: >= 0: written.  < 0: not written - hand the same frame to
        #: :meth:`write`, which deals with every case (FULL counted and
        #: summarised, fragment chains, oversize).  While a gap record is
        #: pending, and after :meth:`close`, the producer holds it back
        #: (``ring_write_unless_held``, RING_HELD), so every frame then goes
        #: through ``write`` and the gap record comes before the first frame
        #: after the drop.  Compiled callers use the same C function
        #: (:meth:`c_handles`).
        self.raw_write: Callable[..., int] = lib.ring_write_unless_held
        self.handle = self._p
        self.frag_limit: int = self._rf.info.frag_limit
        self.max_frame: int = self._rf.info.max_frame
        self.ring_id: bytes = self._rf.info.ring_id
        self.frag_timeout = frag_timeout
        self._gap: _PendingGap | None = None
        self._abort_pending = False  # an open fragment chain still needs its ABORTED end
        # Records that go before any other frame: (body, dropped frames it records).
        self._pending: list[tuple[bytes, int]] = []
        self._owing = False          # any of the three above is waiting for room
        now = time.time_ns()
        if self._p.repaired:
            log_event(log, "ring_repaired", logging.WARNING, path=path, what="head seqlock",
                      reason="left odd", prev_pid=prev_pid)
            self._queue({"kind": "ring_repaired", "what": "head seqlock", "prev_pid": prev_pid})
        if owed > 0:
            # Refused by a predecessor that closed or died before it could
            # record them: the window runs from its first such drop to its
            # last sign of life.
            log_event(log, "drops_owed", logging.WARNING, path=path, frames=owed, prev_pid=prev_pid)
            self._queue({"kind": "drop", "count": owed, "first_ns": owed_since or prev_hb,
                         "last_ns": max(prev_hb, owed_since), "reasons": {"unrecorded": owed},
                         "prev_pid": prev_pid}, frames=owed)
        if self.epoch > 1:
            self._queue({"kind": "producer_restart", "epoch": self.epoch})
        if unclean:
            # The previous producer died without closing: whatever it had
            # received but not written (its socket buffers) is lost.  Say so,
            # with the window in which it happened.
            self._queue({"kind": "gap", "reason": "producer_died", "prev_pid": prev_pid,
                         "since_ns": prev_hb, "until_ns": now})
        if self._owing:
            self._flush_gap(reserved=True)
            if self._owing:
                # once per producer start: the records go first once room returns
                log_event(log, "records_waiting", logging.WARNING, path=path,
                          records=len(self._pending), reason="ring full, reserve used up",
                          then="written first once room returns")

    @property
    def last_seq(self) -> int:
        """Sequence of the last frame written (-1 before the first ever)."""
        return int(self._p.next_seq) - 1

    # -- the hot path ------------------------------------------------------
    def write(self, payload: bytes | bytearray | memoryview, type: int = _DATA, ts: int = 0,
              conn: int = 0, flags: int = 0) -> WriteStatus:
        """Write one frame; never blocks (see the module docstring for chains).

        ``ts`` is the receive time in ns; 0 means "now" (taken inside the C
        call).  Returns OK, FULL (dropped, counted, gap record to follow) or
        TOO_LARGE (refused, counted, oversize record written).
        """
        n = len(payload)
        if self._owing:
            self._flush_gap()
            if self._owing:
                # The records owed go first: a frame that would overtake
                # them is lost too, and counted with them.
                lib.ring_count_drop(self._pp, lib.RING_FULL, n)
                self._lost("ring_full", n, ts)
                return _FULL
        if n <= self.frag_limit:
            # bytes go to C as they are; other buffers through from_buffer:
            # neither copies the payload.
            r = self._write(self._pp, payload if payload.__class__ is bytes else ffi.from_buffer(payload),
                            n, type, flags, conn, ts)
            if r >= 0:
                return _OK
            lib.ring_count_drop(self._pp, lib.RING_FULL, n)
            self._lost("ring_full", n, ts)
            return _FULL
        return self._write_large(payload, n, type, ts, conn, flags)

    # -- control records ---------------------------------------------------
    def write_control(self, kind: str, ts: int = 0, conn: int = 0, *, reserved: bool = False,
                      **fields: Any) -> WriteStatus:
        """Write a small JSON control frame ``{"kind": kind, ...}``.

        ``reserved``: a record that must land (``shard_stop``): the records
        owed go first, and both may use the reserve ordinary writes leave.
        """
        body = orjson.dumps({"kind": kind, **fields})
        if not reserved:
            return self.write(body, type=_CONTROL, ts=ts, conn=conn)
        self._flush_gap(reserved=True)
        if not self._owing and lib.ring_write_reserved(self._pp, body, len(body), _CONTROL, 0,
                                                       conn, ts) >= 0:
            return _OK
        lib.ring_count_drop(self._pp, lib.RING_FULL, len(body))
        self._lost("ring_full", len(body), ts)
        return _FULL

    def poll(self) -> None:
        """Heartbeat, and write a pending gap record if room has returned.

        Call this periodically (the receiver does, once per second) so a drop
        is recorded even if no further frame arrives.
        """
        lib.ring_producer_heartbeat(self._p, time.time_ns())
        if self._owing:
            self._flush_gap()

    def room(self) -> int:
        """Largest payload that fits right now (re-reads the readers)."""
        return lib.ring_room(self._p)

    @property
    def pending_gap(self) -> int:
        """Frames lost and not yet recorded in a gap record."""
        return self._gap.count if self._gap else 0

    @property
    def pending_records(self) -> int:
        """Records (drop, restart, died) still waiting for room."""
        return len(self._pending) + (self._gap is not None)

    def close(self) -> None:
        """Write what is owed, mark the producer stopped (drains use this to
        finish) and release.

        The owed records may use the reserve here.  If even that is gone the
        drop counts stay owed in the ring header, where the next producer
        finds and writes them: never given up quietly.
        """
        if self._rf.fd < 0:
            return
        if self._owing:
            self._flush_gap(reserved=True)
        if self._owing:
            owed = (self._gap.count if self._gap else 0) + sum(f for _, f in self._pending)
            log_event(log, "records_left", logging.WARNING, path=self.path,
                      records=self.pending_records, frames_owed=owed, reason="no room at close",
                      then="the drop counts stay in the ring header for the next producer")
        self._p.hold = 1   # the ring is about to be unmapped
        lib.ring_producer_close(self._p, time.time_ns())
        self._rf.close()

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------
    def c_handles(self) -> tuple[int, int]:
        """(address of ring_write_unless_held, address of this producer's C
        state): ``raw_write`` for compiled callers.  The caller keeps a
        reference to this producer while it uses them."""
        return (int(ffi.cast("uintptr_t", ffi.addressof(lib, "ring_write_unless_held"))),
                int(ffi.cast("uintptr_t", self._p)))

    def _lost(self, reason: str, nbytes: int, ts: int) -> None:
        if self._gap is None:
            self._gap = _PendingGap()
            self._owing = True
            self._p.hold = 1   # the gap record goes first: see raw_write
        self._gap.add(reason, nbytes, ts or time.time_ns())

    def _queue(self, record: dict[str, Any], frames: int = 0) -> None:
        self._pending.append((orjson.dumps(record), frames))
        self._owing = True
        self._p.hold = 1

    def _flush_gap(self, reserved: bool = False) -> None:
        """Write what is owed, in order: an open chain's ABORTED end, the
        queued records, the drop record.  Stops at the first that does not
        fit; ``reserved`` lets them use the reserve."""
        w = lib.ring_write_reserved if reserved else self._write
        pp = self._pp
        if self._abort_pending:
            if w(pp, b"", 0, lib.RING_T_FRAG_END, int(FrameFlags.ABORTED), 0, 0) < 0:
                return
            self._abort_pending = False
        while self._pending:
            body, frames = self._pending[0]
            if w(pp, body, len(body), _CONTROL, 0, 0, 0) < 0:
                return
            self._pending.pop(0)
            if frames:
                lib.ring_count_recorded(pp, frames)
                lib.ring_count_gap_record(pp)
        g = self._gap
        if g is not None:
            body = orjson.dumps({"kind": "drop", "count": g.count, "bytes": g.bytes,
                                 "first_ns": g.first_ns, "last_ns": g.last_ns, "reasons": g.reasons})
            if w(pp, body, len(body), _CONTROL, 0, 0, 0) < 0:
                return
            self._gap = None
            lib.ring_count_recorded(pp, g.count)
            lib.ring_count_gap_record(pp)
        self._owing = False
        self._p.hold = 0

    def _write_large(self, payload: Any, n: int, type: int, ts: int, conn: int, flags: int) -> WriteStatus:
        ts = ts or time.time_ns()
        if n > self.max_frame:
            lib.ring_count_drop(self._p, lib.RING_TOO_LARGE, n)
            if self.write_control("oversize", ts=ts, conn=conn, size=n, limit=self.max_frame) == _OK:
                lib.ring_count_recorded(self._p, 1)
            else:
                self._lost("oversize", n, ts)
            return _TOO_LARGE
        mv = memoryview(payload).cast("B")
        lim = self.frag_limit
        # The original type and flags ride in FRAG_BEGIN's flags byte:
        # low nibble = flags, high nibble = type (see ring.assemble).
        first_flags = (flags & 0x0F) | ((type & 0x0F) << 4)
        chunks = [mv[i:i + lim] for i in range(0, n, lim)]
        for i, chunk in enumerate(chunks):
            if i == 0:
                t, fl = lib.RING_T_FRAG_BEGIN, first_flags
            elif i == len(chunks) - 1:
                t, fl = lib.RING_T_FRAG_END, 0
            else:
                t, fl = lib.RING_T_FRAG_MIDDLE, 0
            if not self._write_waiting(chunk, t, fl, conn, ts, may_wait=True):
                if i > 0:
                    # Close the chain so readers drop the partial frame at
                    # once; if even that does not fit, before the gap record.
                    self._abort_pending = not self._write_waiting(
                        b"", lib.RING_T_FRAG_END, int(FrameFlags.ABORTED), conn, ts, may_wait=False)
                lib.ring_count_drop(self._p, lib.RING_FULL, n)
                self._lost("ring_full", n, ts)
                return _FULL
        lib.ring_count_fragmented(self._p)
        return _OK

    def _write_waiting(self, chunk: Any, t: int, fl: int, conn: int, ts: int, may_wait: bool) -> bool:
        buf = ffi.from_buffer(chunk)
        r = self._write(self._pp, buf, len(chunk), t, fl, conn, ts)
        if r >= 0:
            return True
        if not may_wait:
            return False
        deadline = time.monotonic() + self.frag_timeout
        delay = 20e-6
        while time.monotonic() < deadline:
            time.sleep(delay)
            delay = min(delay * 2, 2e-3)
            if lib.ring_room(self._p) >= len(chunk):
                r = self._write(self._pp, buf, len(chunk), t, fl, conn, ts)
                if r >= 0:
                    return True
        return False

    # -- test hook -----------------------------------------------------------
    def _test_pause_before_commit(self, on: bool = True) -> None:
        """Test only: the next write stops this process (SIGSTOP) after the
        payload copy and before the commit store, so a test can kill -9 it
        at exactly that point."""
        self._p.test_pause = 1 if on else 0
