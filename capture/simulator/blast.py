"""Blast mode: pre-framed data written straight to the socket, for benchmarks.

The receiver benchmark must measure the receiver, not the simulator, so the
simulator does no per-frame Python work while blasting: ``distinct`` payloads
are built once, framed once (RFC 6455 server frames are unmasked, so a frame
is a 2/4/10-byte header plus the payload) and joined into one block, and the
block is handed to ``transport.write`` repeatedly with flow control.  Whole
frames only ever go into a write, so a WebSocket ping the library writes in
between (Kalshi keepalive) still lands on a frame boundary.
"""
from __future__ import annotations

from typing import Callable

from websockets.asyncio.server import ServerConnection

from capture.simulator.record import ConnectionRecord, length_prefixed
from capture.simulator.script import Blast
from capture.simulator.session import Session

OP_TEXT = 0x1


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

    async def run(self, ws: ServerConnection, rec: ConnectionRecord,
                  on_write: Callable[[], None] = lambda: None) -> bool:
        """Write all frames; False if the connection went away first.

        ``on_write`` runs after each block (the server notes the send time,
        so no idle heartbeat is due while the blast flows)."""
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
