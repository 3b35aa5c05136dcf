"""Blast mode: pre-framed data written straight to the socket, for benchmarks.

The receiver benchmark must measure the receiver, not the simulator, so the
simulator does no per-frame Python work while blasting: ``distinct`` payloads
are built once, framed once (RFC 6455 server frames are unmasked, so a frame
is a 2/4/10-byte header plus the payload) and joined into one block, and the
block is handed to ``transport.write`` repeatedly with flow control.  Whole
frames only ever go into a write, so a WebSocket ping the library writes in
between (Kalshi keepalive) still lands on a frame boundary.

Paced blast (``Blast.rate`` > 0).  Theory of operation: the frame offsets in
the block are computed once, so any run of k consecutive frames starting at
frame j is one slice of the block (two when it wraps past the last frame).
Every tick (about 1 ms) the sender works out how many frames the schedule
says are due by now, ``floor(elapsed * rate) - sent``, and writes them as
those one or two slices: the cost per tick is a few calls whatever the rate,
never Python work per frame.  The record takes the same runs (the
length-prefixed block has its own offsets), so it stays exact.  A sender that
falls behind (the socket pushes back) catches up at most one block per
write; whether it kept the schedule is reported in :attr:`BlastPlan.stats`
(achieved rate and the worst lag behind the schedule), never hidden.
"""
from __future__ import annotations

import asyncio
import time
from itertools import accumulate
from typing import Callable

from websockets.asyncio.server import ServerConnection

from capture.simulator.record import ConnectionRecord, length_prefixed
from capture.simulator.script import Blast
from capture.simulator.session import Session

OP_TEXT = 0x1
#: Paced blast: the sender's tick.  Short enough that a run of due frames is
#: a small write (200 frames at 200k/s), long enough that the tick's fixed
#: cost stays far below the receiver's per-frame cost.
TICK_S = 0.001


def ws_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One unmasked, final, uncompressed server frame."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        head = bytes((first, n))
    elif n < 1 << 16:
        head = bytes((first, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, 127)) + n.to_bytes(8, "big")
    return head + payload


def marker(frames: int) -> bytes:
    """The frame that ends a blast; receivers stop counting on it."""
    return b'{"blast_end":true,"frames":%d}' % frames


class BlastPlan:
    """The pre-built frames of one connection's blast."""

    def __init__(self, session: Session, spec: Blast) -> None:
        self.spec = spec
        n = max(1, min(spec.distinct, spec.frames))
        self.payloads = [session.blast_frame(i, spec.size) for i in range(n)]
        self.framed = [ws_frame(p) for p in self.payloads]
        self.block = b"".join(self.framed)
        self.prefixed = b"".join(length_prefixed(p) for p in self.payloads)
        self.payload_bytes = sum(map(len, self.payloads))
        # Offsets of frame i (i = 0..n) in each block, and payload bytes before
        # frame i: a run of frames [a, b) is block[off[a]:off[b]].
        self.frame_off = [0, *accumulate(map(len, self.framed))]
        self.prefixed_off = [0, *accumulate(len(p) + 8 for p in self.payloads)]
        self.payload_off = [0, *accumulate(map(len, self.payloads))]
        #: Paced blasts: how the sender kept its schedule (see :meth:`run`).
        self.stats: dict[str, float] = {}

    async def run(self, ws: ServerConnection, rec: ConnectionRecord,
                  on_write: Callable[[], None] = lambda: None) -> bool:
        """Write all frames; False if the connection went away first.

        ``on_write`` runs after each block (the server notes the send time,
        so no idle heartbeat is due while the blast flows)."""
        if self.spec.rate > 0:
            return await self._run_paced(ws, rec, on_write)
        transport = ws.transport
        left = self.spec.frames
        per = len(self.payloads)
        while left > 0:
            if transport.is_closing():
                return False
            if left >= per:
                transport.write(self.block)
                rec.add_block(self.payloads, self.payload_bytes, self.prefixed)
                left -= per
            else:
                part = self.payloads[:left]
                transport.write(b"".join(self.framed[:left]))
                rec.add_block(part, sum(map(len, part)),
                              b"".join(length_prefixed(p) for p in part))
                left = 0
            on_write()
            await ws.drain()
        return not transport.is_closing()

    def _write_run(self, transport: asyncio.WriteTransport, rec: ConnectionRecord,
                   first: int, k: int) -> None:
        """Write frames [first, first + k) of the block (first < len, k <= len
        - first) and record them: one slice each, no per-frame work."""
        end = first + k
        transport.write(memoryview(self.block)[self.frame_off[first]:self.frame_off[end]])
        rec.add_block(self.payloads[first:end],
                      self.payload_off[end] - self.payload_off[first],
                      memoryview(self.prefixed)[self.prefixed_off[first]:self.prefixed_off[end]])

    async def _run_paced(self, ws: ServerConnection, rec: ConnectionRecord,
                         on_write: Callable[[], None]) -> bool:
        transport = ws.transport
        total, rate, per = self.spec.frames, self.spec.rate, len(self.payloads)
        loop = asyncio.get_running_loop()
        sent = pos = 0      # frames written; index of the next frame in the block
        max_due = 0         # most frames due at one write: ~rate x tick when on schedule
        start = loop.time()
        cpu0 = time.process_time()
        while sent < total and not transport.is_closing():
            due = min(total, int((loop.time() - start) * rate)) - sent
            if due <= 0:
                await asyncio.sleep(TICK_S)
                continue
            max_due = max(max_due, due)
            k = min(due, per)            # at most one block per write
            first = min(k, per - pos)    # up to the end of the block ...
            self._write_run(transport, rec, pos, first)
            if k > first:                # ... and the rest from its start
                self._write_run(transport, rec, 0, k - first)
            sent += k
            pos = (pos + k) % per
            on_write()
            await ws.drain()
            if due == k:                 # caught up: wait for the next tick
                await asyncio.sleep(TICK_S)
        secs = max(loop.time() - start, 1e-9)
        # On schedule, the last frame goes out about one tick after
        # frames / rate; a sender the socket held back shows a lower
        # achieved rate and a larger max_due_frames.
        self.stats = {"rate": rate, "frames": sent, "seconds": secs,
                      "achieved_rate": sent / secs, "max_due_frames": max_due,
                      "sender_cpu_s": time.process_time() - cpu0}
        rec.blast = self.stats
        return sent == total and not transport.is_closing()
