"""Catch-up from the flusher's segment files (see flusher.publisher.publish, "Sources").

When the ring laps the publisher, it reads from ``next_seq`` in the segment
files (which hold every frame the ring overwrote: the flusher is tethered)
until the ring holds ``next_seq`` again, then goes back to the ring.  Frames
neither source holds any more are declared lost, counted and said on the bus.
A frame that fails its check in the ring is taken from the files the same
way (``_corrupt``).

The files are read as batches of columns (flusher.segments.batches) and go
through the ring's own publishing loop (publish.Publisher._publish_frames):
one path, one cost per frame, whichever source a frame comes from.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time

from common.errors import CorruptFrame, Lapped, SegmentError
from common.log import event as log_event
from flusher.segments.batches import record_batches
from ring.assemble import Assembler

log = logging.getLogger("capture.publisher")


class SegmentCatchup:
    """The disk source of :class:`flusher.publisher.publish.Publisher` (a mixin: it
    uses the publisher's cursor, pipeline and counters)."""

    # -- leaving the ring ---------------------------------------------------------------------
    def _lapped(self, lap: Lapped) -> None:
        self.stats["lapped"] += 1
        if self.mode != "disk":
            log_event(log, "lapped", next_seq=self.next_seq, oldest_in_ring=lap.resume_sequence,
                      action="catching up from the segment files")
        self.mode = "disk"
        self._lap_pos = lap.position
        self._asm = Assembler()     # next_seq is a message boundary: nothing half-done
        self._disk_progress_at = time.monotonic()

    def _corrupt(self, bad: CorruptFrame) -> None:
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
        self.mode = "disk"
        self._lap_pos = bad.position
        self._asm = Assembler()
        self._disk_progress_at = time.monotonic()

    def _lost(self, first: int, last: int, why: str) -> None:
        """Frames that can no longer be published: counted, and said on the bus."""
        n = last - first + 1
        self.stats["lost"] += n
        log_event(log, "gap", logging.ERROR, first_seq=first, last_seq=last, frames=n, reason=why)
        body = json.dumps({"kind": "publisher_gap", "first_seq": first, "last_seq": last,
                           "reason": why}).encode()
        # Keyed like the first lost frame: de-duplicated if this is said twice.
        self._put(first, self.control_subject, body, time.time_ns(), None)

    # -- reading the files --------------------------------------------------------------------
    def _segment_list(self) -> list[str]:
        from flusher.segments.read import segment_paths
        from flusher.segments.names import parse_name
        if not self.segments or not os.path.isdir(self.segments):
            return []
        paths = segment_paths(self.segments, self.venue, self.shard)
        named = [(p, parse_name(os.path.basename(p))) for p in paths]
        # Skip whole files that end before next_seq: the next file starts at or before it.
        out = []
        for i, (p, sn) in enumerate(named):
            nxt = named[i + 1][1] if i + 1 < len(named) else None
            if nxt is not None and sn is not None and nxt.first_seq <= self.next_seq:
                continue
            out.append(p)
        return out

    async def _pump_disk(self) -> bool:
        start = self.next_seq
        ring_id = bytes.fromhex(self.ring_id.decode())
        # Every round restarts at next_seq, a message boundary: a fresh assembler.
        self._asm = Assembler()
        count = 0
        try:
            for path in self._segment_list():
                hdrs: list = []
                try:
                    # Columns of records, as from the ring, through the same
                    # inline publishing (publish._publish_frames): the per-record
                    # generator and Assembler round cost more than the publish.
                    for b in record_batches(path, start_seq=self.next_seq, header_out=hdrs):
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
            self._disk_progress_at = time.monotonic()
        if self.next_seq > start:
            self.stats["catchup_rounds"] += 1
        # Back to the ring if it still holds next_seq.
        # Not while the ring still holds a frame found corrupt there: reading
        # from the oldest frame would meet it again (_corrupt).
        pos, oldest = self.rd.resume_oldest()
        if oldest <= self.next_seq and oldest > self._corrupt_seq:
            self.mode = "ring"
            self._asm = Assembler()
            self.stats["catchup_done"] += 1
            log_event(log, "caught_up", next_seq=self.next_seq, action="back on the ring")
            return False
        if time.monotonic() - self._disk_progress_at > self.disk_wait and oldest > self.next_seq:
            self._lost(self.next_seq, oldest - 1, "not in the ring and not in the segment files")
            self.next_seq = oldest
            self.mode = "ring"
            self._asm = Assembler()
            return False
        # A shutdown drain that ends on the files (the ring still holds a
        # frame found corrupt, so it cannot go back): done once every frame
        # the stopped producer wrote has been handed over.
        if (self.stopping.is_set() and self.rd.producer_stopped()
                and self.next_seq >= self.rd.head_seq()):
            return True
        await asyncio.sleep(0.01 if not count else 0)
        return False
