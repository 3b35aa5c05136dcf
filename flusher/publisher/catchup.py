"""Catch-up from the flusher's segment files (see flusher.publisher.publish, "Sources").

When the ring laps the publisher, it reads from ``next_seq`` in the segment
files (which hold every frame the ring overwrote: the flusher is tethered)
until the ring holds ``next_seq`` again, then goes back to the ring.  Frames
neither source holds any more are declared lost, counted and said on the bus.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time

from ring.assemble import Assembler
from common.errors import SegmentError
from ring.frame import FrameType

log = logging.getLogger("capture.publisher")

_PADDING = int(FrameType.PADDING)


class SegmentCatchup:
    """The disk source of :class:`flusher.publisher.publish.Publisher` (a mixin: it
    uses the publisher's cursor, pipeline and counters)."""

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
        from flusher.segments.read import records
        start = self.next_seq
        pipe = self.pipe
        ring_id = bytes.fromhex(self.ring_id.decode())
        # Every round restarts at next_seq, a message boundary: a fresh assembler.
        asm = self._asm = Assembler()
        count = 0
        try:
            for path in self._segment_list():
                hdrs: list = []
                try:
                    it = records(path, start_seq=self.next_seq, header_out=hdrs)
                    for _off, rec, payload in it:
                        if hdrs and hdrs[0].ring_id != ring_id:
                            break     # a file of an earlier ring with this shard number
                        seq, ts, typ, fl, conn = rec[2], rec[3], rec[4], rec[5], rec[6]
                        if seq < self.next_seq or typ == _PADDING:
                            continue
                        if seq > self.next_seq and asm.open_chain_seq is None:
                            self._lost(self.next_seq, seq - 1, "missing from the segment files")
                        msg = asm.feed(seq, ts, typ, fl, conn, payload)
                        if asm.open_chain_seq is None:
                            self.next_seq = seq + 1
                        if msg is None:
                            continue
                        if not self._first_checked:
                            await self._first_check(msg.seq, msg.ts)
                        if not pipe.has_room():
                            await self._wait_room()
                        self._publish(msg.seq, msg.ts, msg.type, msg.payload,
                                      (self._lap_pos, seq + 1))
                        count += 1
                        if count % 1024 == 0:
                            self._commit()
                            await asyncio.sleep(0)
                except FileNotFoundError:
                    break       # renamed (closed/compressed) under us: list again
        except SegmentError as exc:
            self.stats["segment_error"] += 1
            log.error("publisher: segment files unreadable: %s", exc)
        self.stats["disk_frames"] += count
        if count:
            self.stats["catchup_frames"] += count
            self._disk_progress_at = time.monotonic()
        if self.next_seq > start:
            self.stats["catchup_rounds"] += 1
        # Back to the ring if it still holds next_seq.
        # Not while the ring still holds a frame found corrupt there: reading
        # from the oldest frame would meet it again (publish._corrupt).
        pos, oldest = self.rd.resume_oldest()
        if oldest <= self.next_seq and oldest > self._corrupt_seq:
            self.mode = "ring"
            self._asm = Assembler()
            self.stats["catchup_done"] += 1
            log.info("publisher: caught up from disk; back on the ring at sequence %d",
                     self.next_seq)
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
