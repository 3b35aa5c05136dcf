"""The publisher's side of NATS: connecting, the stream, and the read-back after a restart.

Connecting.  NATS unreachable and NATS refusing the credentials alike are
waited out for ever (capped backoff); disk capture never depends on NATS.
Only a TLS problem (configuration) ends the publisher.

Restart after a crash.  The reader resumes at its committed cursor; frames
after it may already be stored.  If the first of them was received less than
the catch-up horizon ago, resends are left to JetStream's de-duplication;
otherwise the publisher first reads back which sequences of this ring the
stream holds since that time (``stream.stored_sequences``) and skips them.
The same read-back protects resends after an outage longer than the horizon
(see flusher/publisher/pipeline.py).

Two objects, each owning its state: :class:`NatsSession` (the client and
what the status file says of it) and :class:`ReadBack` (which sequences the
stream already holds).  The publisher hands them its counters, its stop
event and a few callables; they never see the publisher itself.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any, Callable

from common.log import event as log_event
from flusher.publisher.split import key_seq
from flusher.publisher.stream import (BusConfig, NatsAuthError, NatsTLSError, NatsUnreachable, StreamMismatch,
                                      StreamSettings, connect, ensure_stream, horizon_margin, stored_sequences)

log = logging.getLogger("capture.publisher")


class DrainExpired(Exception):
    """Internal: the shutdown drain ran out of time."""


class NatsSession:
    """The publisher's NATS client: connecting, the stream, the link's state.

    Owns the client (``nc``, None until connected) and what the status file
    says of it: ``state`` (``connecting``, ``connected``, ``unreachable``,
    ``refusing credentials``, ``disconnected``), ``error`` (the reason, never
    the server list: it may carry credentials) and ``last_error``.

    Args:
        bus, stream: the NATS settings and this venue's stream.
        name: the client's name (seen in the server's monitoring).
        stats: the publisher's counters (this object adds to them).
        stopping: set when a shutdown begins (connecting gives up).
        check_deadline: raises DrainExpired once a shutdown drain's time is up.
        on_change: called after a connection attempt (the publisher writes
            its status file).
        link_down, link_up: called on a disconnect / a reconnect (the
            publisher tells its ack pipeline).
    """

    def __init__(self, bus: BusConfig, stream: StreamSettings, name: str,
                 stats: collections.Counter[str], stopping: asyncio.Event, *,
                 check_deadline: Callable[[], None], on_change: Callable[[], None],
                 link_down: Callable[[], None], link_up: Callable[[], None]) -> None:
        self.bus, self.stream, self.name = bus, stream, name
        self.stats = stats
        self.stopping = stopping
        self._check_deadline = check_deadline
        self._on_change = on_change
        self._link_down, self._link_up = link_down, link_up
        self.nc: Any = None
        self.state = "connecting"       # for the status file: /healthz fails unless connected
        self.error: str | None = None
        #: The most recent failure, for `capture status` ("" while all is well).
        self.last_error = ""
        self._closing = False

    # -- connecting ---------------------------------------------------------------------------
    async def connect_forever(self) -> None:
        """Connect, retrying for ever with a capped backoff: NATS unreachable
        and NATS refusing the credentials alike.  Disk capture never depends
        on NATS (the flusher goes on), so the publisher stays up, says what
        is wrong (log, status file -> /metrics and /healthz) and keeps
        trying; a fixed password or a server back is picked up without a
        restart.  Only a TLS problem (configuration) ends it.

        Raises:
            NatsTLSError: the TLS handshake failed.
            DrainExpired: a shutdown began before NATS could be reached.
        """
        delay = 0.1
        last_log = None
        while True:
            try:
                self.nc = await connect(self.bus, name=self.name, disconnected_cb=self._on_disconnected,
                                        reconnected_cb=self._on_reconnected)
                if last_log is not None:
                    log_event(log, "nats_connected")
                self.state, self.error = "connected", None
                self._on_change()
                return
            except NatsTLSError:
                raise           # a certificate problem is configuration, not an outage
            except (NatsUnreachable, NatsAuthError) as exc:
                auth = isinstance(exc, NatsAuthError)
                self.stats["auth_failed" if auth else "connect_failed"] += 1
                self.state = "refusing credentials" if auth else "unreachable"
                # the reason only: the server list may carry credentials
                self.error = getattr(exc, "reason", type(exc).__name__)
                self.last_error = f"nats {self.state}: {self.error}"
                now = time.monotonic()
                if last_log is None or now - last_log > 60.0:
                    log_event(log, "nats_connect_failed", logging.WARNING, state=self.state,
                              error=self.error,
                              action="retrying forever (backoff capped at 5s), disk capture goes on")
                    last_log = now
                self._on_change()
            if self.stopping.is_set():
                raise DrainExpired()
            try:
                await asyncio.wait_for(self.stopping.wait(), delay)
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, 5.0)

    async def connect_once(self, *, attempts: int) -> None:
        """Connect as a command does: ``attempts`` tries per server, then the
        typed error for the caller to print (``capture replay --to-nats``).

        Raises:
            NatsUnreachable, NatsAuthError, NatsTLSError: as :func:`stream.connect`.
        """
        self.nc = await connect(self.bus, name=self.name, attempts=attempts,
                                disconnected_cb=self._on_disconnected,
                                reconnected_cb=self._on_reconnected)

    async def ensure_stream_forever(self) -> None:
        """Create or update the stream, waiting out a JetStream not ready yet.

        Raises:
            StreamMismatch: the stream cannot be made to match the config.
            DrainExpired: a shutdown drain ran out of time meanwhile.
        """
        delay = 0.1
        while True:
            try:
                await ensure_stream(self.nc, self.stream)
                return
            except StreamMismatch as exc:
                if exc.key != "jetstream":
                    raise
                self.stats["stream_unavailable"] += 1
            except Exception as exc:  # noqa: BLE001 - timeouts while a cluster elects
                self.stats["stream_unavailable"] += 1
                log_event(log, "stream_unavailable", logging.DEBUG, stream=self.stream.name, error=repr(exc))
            self._check_deadline()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _on_disconnected(self) -> None:
        if self._closing:
            return
        self.stats["disconnected"] += 1
        self.state = "disconnected"
        self.last_error = "nats: disconnected"
        self._link_down()

    async def _on_reconnected(self) -> None:
        self.stats["reconnected"] += 1
        self.state, self.error = "connected", None
        self._link_up()

    # -- closing ------------------------------------------------------------------------------
    def begin_close(self) -> None:
        """From here on a disconnect is our own close, not an outage: not
        counted, not passed on.  (Before the pipeline closes, so its own
        unsubscribe cannot be taken for one.)"""
        self._closing = True

    async def close(self) -> None:
        self._closing = True
        if self.nc:
            try:
                # Bounded: nats-py's close() can wait on a reconnect in progress.
                await asyncio.wait_for(self.nc.close(), 5.0)
            except (Exception, asyncio.TimeoutError):  # noqa: BLE001 - closing anyway
                pass


class ReadBack:
    """Which sequences of the current ring the stream already holds (see the
    module docstring, "Restart after a crash").

    Owns the set of pipeline keys found stored and not yet met (``skip``:
    whole frames by sequence, parts of a split frame by part key), whether
    the reader resumed a cursor, and whether the first check was made.
    ``skip`` is only ever updated in place, so the frame loop may bind it once
    per batch and test it per frame; keys leave it through :meth:`take`.

    Args:
        session: the NATS session whose client (``nc``) asks the stream.
        stream: the venue's stream (its name and subject filter).
        horizon_s: the catch-up horizon (de-duplication reaches this far back).
        stats: the publisher's counters.
    """

    def __init__(self, session: NatsSession, stream: StreamSettings, horizon_s: float,
                 stats: collections.Counter[str]) -> None:
        self._session = session
        self._stream = stream
        self._horizon_s = horizon_s
        self.stats = stats
        self.skip: set[int] = set()
        self.resumed = False
        self.checked = False
        self._msg_id_prefix = ""

    def bind_ring(self, msg_id_prefix: str, *, resumed: bool) -> None:
        """Frames from here on are of the ring whose Msg-Ids start with
        ``msg_id_prefix``; ``resumed``: frames of it may be stored already,
        so the first one is checked (:meth:`first_check`)."""
        self._msg_id_prefix = msg_id_prefix
        self.resumed = resumed
        self.checked = False

    def take(self, key: int) -> bool:
        """True (and forgotten) if the read-back found ``key`` stored."""
        skip = self.skip
        if skip and key in skip:
            skip.discard(key)
            return True
        return False

    async def verify(self, entries: list) -> set[int]:
        """The ack pipeline's verify: which of these (sent beyond the horizon) are stored."""
        since = (min(e.first_sent_wall for e in entries)
                 - horizon_margin(self._horizon_s))
        stream = self._stream
        return await stored_sequences(self._session.nc, stream.name, stream.subjects[0],
                                      self._msg_id_prefix, since,
                                      min(key_seq(e.seq) for e in entries))

    async def first_check(self, seq: int, ts: int) -> None:
        """Before the first publish of a resumed reader: if a previous process may
        have stored frames from ``seq`` on longer ago than the horizon allows
        de-duplication, read back which ones, and skip them."""
        self.checked = True
        h = self._horizon_s
        if not self.resumed or time.time() - ts / 1e9 <= h - horizon_margin(h):
            return
        self.stats["startup_scan"] += 1
        stream = self._stream
        while True:
            try:
                stored = await stored_sequences(self._session.nc, stream.name,
                                                stream.subjects[0], self._msg_id_prefix,
                                                ts / 1e9 - horizon_margin(h), seq)
                break
            except Exception as exc:  # noqa: BLE001 - NATS may be down again: retry
                self.stats["startup_scan_failed"] += 1
                log_event(log, "readback_failed", logging.WARNING, error=repr(exc), action="retrying in 1s")
                await asyncio.sleep(1.0)
        self.skip.update(stored)     # in place: the frame loop holds this set
        log_event(log, "already_stored", frames=len(stored), after="the committed cursor",
                  action="skipped, not published again")
