"""Catch-up from the flusher's segment files (see flusher.publisher.publish, "Sources").

When the ring laps the publisher, it reads from ``next_seq`` in the segment
files (which hold every frame the ring overwrote: the flusher is tethered)
until the ring holds ``next_seq`` again, then goes back to the ring.  Frames
neither source holds any more are declared lost, counted and said on the bus.
A frame that fails its check in the ring is taken from the files the same
way (:meth:`SegmentCatchup.corrupt`).

The files are read as batches of columns (flusher.segments.batches) and go
through the ring's own publishing loop (publish.Publisher._publish_frames):
one path, one cost per frame, whichever source a frame comes from.

:class:`SegmentCatchup` owns which source is read (``mode``) and the disk
side's state: the ring position the lap (or the corrupt frame) was met at,
the last frame found corrupt, the time of the last progress on the files.
``next_seq`` and the assembler are the shared
:class:`~flusher.publisher.position.Position`'s; the publisher's loop, its
commit and its gap notice are given as callables.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from typing import Awaitable, Callable

import ring
from common.errors import CorruptFrame, Lapped, SegmentError
from common.log import event as log_event
from flusher.publisher.position import Position
from flusher.segments.batches import record_batches

log = logging.getLogger("capture.publisher")

#: The publisher's frame loop: (seqs, tss, types, flags, conns, payloads,
#: ends, missing) -> messages handed over (publish.Publisher._publish_frames).
PublishFrames = Callable[[list, list, list, list, list, list, list, "str | None"], Awaitable[int]]


class SegmentCatchup:
    """The disk source of :class:`flusher.publisher.publish.Publisher`.

    Args:
        position: the shared ``next_seq`` and assembler.
        segments: root directory of the flusher's segment files (None: none).
        venue, shard: whose files.
        disk_wait: how long frames the files should hold may be waited for
            before they are declared lost (seconds).
        stats: the publisher's counters.
        stopping: set when a shutdown begins.
        publish_frames: the publisher's frame loop.
        commit: commits the acknowledged prefix to the ring cursor.
        lost: (first, last, why): frames neither source holds, said on the bus.
    """

    def __init__(self, position: Position, *, segments: str | None, venue: str, shard: int,
                 disk_wait: float, stats: collections.Counter[str], stopping: asyncio.Event,
                 publish_frames: PublishFrames, commit: Callable[[], None],
                 lost: Callable[[int, int, str], None]) -> None:
        self.position = position
        self.segments, self.venue, self.shard = segments, venue, shard
        self.disk_wait = disk_wait
        self.stats = stats
        self.stopping = stopping
        self._publish_frames = publish_frames
        self._commit = commit
        self._lost = lost
        #: the source being read: "ring" or "disk" (in the status file)
        self.mode = "ring"
        self._lap_pos = 0           # the commit position of frames read from disk (see publish, "Commit")
        self._corrupt_seq = -1      # the last frame found corrupt in the ring (see corrupt)
        self._progress_at = 0.0     # when the files last gave a frame

    # -- leaving the ring ---------------------------------------------------------------------
    def lapped(self, lap: Lapped) -> None:
        """The ring overwrote frames the publisher had not read: to the files."""
        self.stats["lapped"] += 1
        if self.mode != "disk":
            log_event(log, "lapped", next_seq=self.position.next_seq, oldest_in_ring=lap.resume_sequence,
                      action="catching up from the segment files")
        self._leave_ring(lap.position)

    def corrupt(self, bad: CorruptFrame) -> None:
        """A frame in the ring failed its checks (a bit flip in shared memory).

        It is not published from the ring.  As after a lap, the segment files
        provide it (the flusher checked it when it wrote it); the catch-up
        stays on them until the producer has overwritten the bad frame, and
        if they lack it, records it lost (publisher_gap).  Counted once per
        frame, logged."""
        if bad.sequence != self._corrupt_seq:
            self.stats["corrupt_frames"] += 1
            log_event(log, "corrupt_frame", logging.ERROR, seq=bad.sequence, ring_position=bad.position,
                      reason=bad.reason,
                      action="not published from the ring; taking it from the segment files")
        self._corrupt_seq = bad.sequence
        self._leave_ring(bad.position)

    def _leave_ring(self, ring_position: int) -> None:
        self.mode = "disk"
        self._lap_pos = ring_position
        self.position.restart()     # next_seq is a message boundary: nothing half-done
        self._progress_at = time.monotonic()

    # -- reading the files --------------------------------------------------------------------
    def _segment_list(self) -> list[str]:
        from flusher.segments.read import segment_paths
        from flusher.segments.names import parse_name
        if not self.segments or not os.path.isdir(self.segments):
            return []
        paths = segment_paths(self.segments, self.venue, self.shard)
        named = [(p, parse_name(os.path.basename(p))) for p in paths]
        # Skip whole files that end before next_seq: the next file starts at or before it.
        next_seq = self.position.next_seq
        out = []
        for i, (p, sn) in enumerate(named):
            nxt = named[i + 1][1] if i + 1 < len(named) else None
            if nxt is not None and sn is not None and nxt.first_seq <= next_seq:
                continue
            out.append(p)
        return out

    async def pump(self, rd: ring.Reader, ring_id: bytes) -> bool:
        """One round on the files from ``next_seq``, then back to the ring if it
        holds ``next_seq`` again.  ``rd``: the publisher's ring reader;
        ``ring_id``: the ring's id (files of an earlier ring are not read).
        True once a shutdown drain that ends on the files is done."""
        pos = self.position
        start = pos.next_seq
        # Every round restarts at next_seq, a message boundary: a fresh assembler.
        pos.restart()
        count = 0
        try:
            for path in self._segment_list():
                hdrs: list = []
                try:
                    # Columns of records, as from the ring, through the same
                    # inline publishing (publish._publish_frames): the per-record
                    # generator and Assembler round cost more than the publish.
                    for b in record_batches(path, start_seq=pos.next_seq, header_out=hdrs):
                        if hdrs[0].ring_id != ring_id:
                            break     # a file of an earlier ring with this shard number
                        count += await self._publish_frames(
                            b.seq, b.ts, b.type, b.flags, b.conn, b.payload,
                            [self._lap_pos] * len(b.seq), "missing from the segment files")
                        self._commit()
                        await asyncio.sleep(0)
                except FileNotFoundError:
                    break       # renamed (closed/compressed) under us: list again
        except SegmentError as exc:
            self.stats["segment_error"] += 1
            log_event(log, "segment_unreadable", logging.ERROR, error=str(exc))
        self.stats["disk_frames"] += count
        if count:
            self.stats["catchup_frames"] += count
            self._progress_at = time.monotonic()
        if pos.next_seq > start:
            self.stats["catchup_rounds"] += 1
        # Back to the ring if it still holds next_seq.
        # Not while the ring still holds a frame found corrupt there: reading
        # from the oldest frame would meet it again (corrupt).
        _pos, oldest = rd.resume_oldest()
        if oldest <= pos.next_seq and oldest > self._corrupt_seq:
            self.mode = "ring"
            pos.restart()
            self.stats["catchup_done"] += 1
            log_event(log, "caught_up", next_seq=pos.next_seq, action="back on the ring")
            return False
        if time.monotonic() - self._progress_at > self.disk_wait and oldest > pos.next_seq:
            self._lost(pos.next_seq, oldest - 1, "not in the ring and not in the segment files")
            pos.restart(at=oldest)
            self.mode = "ring"
            return False
        # A shutdown drain that ends on the files (the ring still holds a
        # frame found corrupt, so it cannot go back): done once every frame
        # the stopped producer wrote has been handed over.
        if (self.stopping.is_set() and rd.producer_stopped()
                and pos.next_seq >= rd.head_seq()):
            return True
        await asyncio.sleep(0.01 if not count else 0)
        return False
