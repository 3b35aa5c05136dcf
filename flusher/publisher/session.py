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
"""
from __future__ import annotations

import asyncio
import logging
import time

from common.log import event as log_event
from flusher.publisher.split import key_seq
from flusher.publisher.stream import (NatsAuthError, NatsTLSError, NatsUnreachable, StreamMismatch, connect,
                                      ensure_stream, horizon_margin, stored_sequences)

log = logging.getLogger("capture.publisher")


class DrainExpired(Exception):
    """Internal: the shutdown drain ran out of time."""


class NatsSession:
    """The NATS half of :class:`flusher.publisher.publish.Publisher` (a mixin,
    as :class:`~flusher.publisher.catchup.SegmentCatchup`: it uses the
    publisher's connection, settings, counters and status)."""

    # -- connecting ---------------------------------------------------------------------------
    async def _connect_forever(self) -> None:
        """Connect, retrying for ever with a capped backoff: NATS unreachable
        and NATS refusing the credentials alike.  Disk capture never depends
        on NATS (the flusher goes on), so the publisher stays up, says what
        is wrong (log, status file -> /metrics and /healthz) and keeps
        trying; a fixed password or a server back is picked up without a
        restart.  Only a TLS problem (configuration) ends it."""
        delay = 0.1
        last_log = None
        while True:
            try:
                self.nc = await connect(
                    self.bus, name=f"capture-publisher-{self.venue}-{self.shard}",
                    disconnected_cb=self._on_disconnected, reconnected_cb=self._on_reconnected)
                if last_log is not None:
                    log_event(log, "nats_connected")
                self.nats_state, self.nats_error = "connected", None
                self.write_status()
                return
            except NatsTLSError:
                raise           # a certificate problem is configuration, not an outage
            except (NatsUnreachable, NatsAuthError) as exc:
                auth = isinstance(exc, NatsAuthError)
                self.stats["auth_failed" if auth else "connect_failed"] += 1
                self.nats_state = "refusing credentials" if auth else "unreachable"
                # the reason only: the server list may carry credentials
                self.nats_error = getattr(exc, "reason", type(exc).__name__)
                self.last_error = f"nats {self.nats_state}: {self.nats_error}"
                now = time.monotonic()
                if last_log is None or now - last_log > 60.0:
                    log_event(log, "nats_connect_failed", logging.WARNING, state=self.nats_state,
                              error=self.nats_error,
                              action="retrying forever (backoff capped at 5s), disk capture goes on")
                    last_log = now
                self.write_status()
            if self.stopping.is_set():
                raise DrainExpired()
            try:
                await asyncio.wait_for(self.stopping.wait(), delay)
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, 5.0)

    async def _ensure_stream_forever(self) -> None:
        delay = 0.1
        while True:
            try:
                await ensure_stream(self.nc, self.settings)
                return
            except StreamMismatch as exc:
                if exc.key != "jetstream":
                    raise
                self.stats["stream_unavailable"] += 1
            except Exception as exc:  # noqa: BLE001 - timeouts while a cluster elects
                self.stats["stream_unavailable"] += 1
                log_event(log, "stream_unavailable", logging.DEBUG, stream=self.settings.name, error=repr(exc))
            self._check_deadline()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _on_disconnected(self) -> None:
        if self._closing:
            return
        self.stats["disconnected"] += 1
        self.nats_state = "disconnected"
        self.last_error = "nats: disconnected"
        if self.pipe:
            self.pipe.on_disconnected()

    async def _on_reconnected(self) -> None:
        self.stats["reconnected"] += 1
        self.nats_state, self.nats_error = "connected", None
        if self.pipe:
            self.pipe.on_reconnected()

    # -- the read-back ------------------------------------------------------------------------
    async def _verify(self, entries: list) -> set[int]:
        since = (min(e.first_sent_wall for e in entries)
                 - horizon_margin(self.bus.horizon_s))
        return await stored_sequences(self.nc, self.settings.name, self.settings.subjects[0],
                                      self.msg_id_prefix, since,
                                      min(key_seq(e.seq) for e in entries))

    async def _first_check(self, seq: int, ts: int) -> None:
        """Before the first publish of a resumed reader: if a previous process may
        have stored frames from ``seq`` on longer ago than the horizon allows
        de-duplication, read back which ones, and skip them."""
        self._first_checked = True
        h = self.bus.horizon_s
        if not self._resumed or time.time() - ts / 1e9 <= h - horizon_margin(h):
            return
        self.stats["startup_scan"] += 1
        while True:
            try:
                stored = await stored_sequences(self.nc, self.settings.name,
                                                self.settings.subjects[0], self.msg_id_prefix,
                                                ts / 1e9 - horizon_margin(self.bus.horizon_s), seq)
                break
            except Exception as exc:  # noqa: BLE001 - NATS may be down again: retry
                self.stats["startup_scan_failed"] += 1
                log_event(log, "readback_failed", logging.WARNING, error=repr(exc), action="retrying in 1s")
                await asyncio.sleep(1.0)
        self._skip |= stored
        log_event(log, "already_stored", frames=len(stored), after="the committed cursor",
                  action="skipped, not published again")
