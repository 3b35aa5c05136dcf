"""How a connection ends: the stop request and the two ways we close a socket.

A :class:`Closer` belongs to one :class:`capture.receiver.connection.Connection`
and owns what ending it needs, so the connection's run loop and watchdog only
ask:

* the stop request: a future set once by :meth:`Closer.request` (from
  ``Connection.stop``), armed by :meth:`Closer.arm` when the run loop starts.
  Every wait of the run loop (the staggered start, the backoff between
  attempts, the watchdog's tick) waits on it too, so a stop is never late by a
  whole backoff.
* :meth:`Closer.for_stop`: the closing handshake of a stop, read to its end
  (theory below), recorded as ``closed {code, reason, by, handshake,
  after_close}``.
* :meth:`Closer.replace`: closing a stale connection (keepalive or silence
  timeout, refused credentials); the run loop then opens a new one.

Theory of operation of a stop's close.  After our close frame the server may
go on sending until it reads it and answers with its own (RFC 6455 5.5.1):
every message before that frame is received and lands in the ring like any
other.  A fixed timeout would cut off a server still busy sending (measured:
a simulator behind its schedule answered late and the messages in the socket
at the abort were gone), so the wait restarts while messages arrive and gives
up only after ``close_timeout`` without one, or at ``close_cap``.  If it gives
up, the ``closed`` record says so (``handshake: "aborted"``): what the server
sent after that is not on disk, and the record is the only trace of it.

The closer acts through two callables the connection hands it (read its frame
count, write a record), never by reading the connection's attributes.
"""
from __future__ import annotations

import asyncio
from typing import Callable

from capture.receiver.lifecycle import Timing
from capture.receiver.transport import CloseInfo, Transport


class Closer:
    """The stop request and the closing handshakes of one connection.

    Args:
        timing: the connection's intervals (``close_timeout``, ``close_cap``).
        frames: the connection's count of frames received so far.
        record: writes one control record of the connection.
    """

    def __init__(self, timing: Timing, frames: Callable[[], int],
                 record: Callable[..., None]) -> None:
        self.timing = timing
        self._frames = frames
        self._record = record
        self.stop: asyncio.Future[None] | None = None
        #: stops whose closing handshake was cut off (see :meth:`for_stop`)
        self.aborted = 0

    # -- the stop request ----------------------------------------------------------
    def arm(self) -> asyncio.Future[None]:
        """A fresh stop request on the running loop (the run loop's start)."""
        self.stop = asyncio.get_running_loop().create_future()
        return self.stop

    def request(self) -> None:
        """Ask for the stop (a no-op before :meth:`arm` or once asked)."""
        if self.stop is not None and not self.stop.done():
            self.stop.set_result(None)

    @property
    def requested(self) -> bool:
        return self.stop is not None and self.stop.done()

    async def sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; False if stop was requested."""
        assert self.stop is not None
        if self.stop.done():
            return False
        try:
            await asyncio.wait_for(asyncio.shield(self.stop), seconds)
            return False
        except (TimeoutError, asyncio.TimeoutError):
            return True

    # -- closing the socket ------------------------------------------------------------
    async def for_stop(self, t: Transport) -> None:
        """The closing handshake of a stop, reading to its end (see the module
        docstring), and its ``closed`` record."""
        tm = self.timing
        before = self._frames()
        task = asyncio.ensure_future(t.close(1000, "shutdown", max(tm.close_cap, tm.close_timeout)))
        seen = before
        aborted = False
        while True:
            done, _ = await asyncio.wait({task}, timeout=tm.close_timeout)
            if done:
                break
            now = self._frames()
            if now == seen:      # silent for a whole close_timeout: no answer coming
                aborted = True
                t.abort()
                break
            seen = now
        try:
            # after an abort the transport may never finish the close() it was
            # asked for (picows): the TCP link is gone, so do not wait on it
            info = await asyncio.wait_for(asyncio.shield(task), tm.close_timeout if aborted else None)
        except asyncio.TimeoutError:
            task.cancel()
            info = getattr(t, "close_info", None) or CloseInfo(1006, "closing handshake cut off", "client")
        if info.code == 1006:    # close() itself gave up at the cap, or the TCP link went
            aborted = True
        if aborted:
            self.aborted += 1
        self._record("closed", code=info.code, reason=info.reason, by="client",
                     handshake="aborted" if aborted else "complete",
                     after_close=self._frames() - before)

    async def replace(self, t: Transport, why: str) -> CloseInfo:
        """Close a stale connection; returns its :class:`CloseInfo`."""
        return await t.close(4000, f"stale: {why}", self.timing.close_timeout)
