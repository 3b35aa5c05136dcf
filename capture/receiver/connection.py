"""One WebSocket connection of a shard: its lifecycle as one explicit state machine.

Rule 1: everything that changes a connection's state goes through
:data:`capture.receiver.lifecycle.TRANSITIONS`, via :meth:`Connection._fire`, and every transition
writes a control record into the ring.  Nothing else assigns ``state``.

The states, events and their table live in :mod:`capture.receiver.lifecycle`.

A connection never ends the process: every failure leads to backing_off, and
only :meth:`Connection.stop` leads to closed.

The hot path (:meth:`Connection._on_message`, called by the transport with the
receive time already taken) writes the frame into the ring *first*, then
looks at its size only: frames above a small peek limit are counted as data
without being parsed.  Small frames (heartbeats, pongs are a few dozen bytes)
and, while replies are awaited (acks after a subscribe), frames up to
``venues.base.CONTROL_MAX``, go through the venue module's cheap
``classify``.  Malformed frames (not JSON, truncated) stay in the ring as
received and are counted: small ones by ``classify`` plus a check of their
first and last byte, long ones by their last byte alone.  A ring that refuses
a frame (FULL) never blocks the socket: the producer counts it and writes a gap
record once room returns.

The records a connection writes (every transition, replies, reconnects,
integrity) are listed with their fields in :mod:`capture.receiver.lifecycle`.

Sequence checking is the only integrity work on the hot path: for venues with
a ``seq_layout``, one anchored regex match on the frame's head
(:class:`capture.receiver.repair.SeqScanner`, the venue module's ``sequence()``
semantics) and, for book frames, a dict update (the gap rule of
:class:`capture.venues.base.GapDetector`, inlined), after the ring write.

The connection is composed of parts that own their state: the venue's
subscriber (what to send), :class:`capture.receiver.replies.Replies` (the
requests of this attempt and their replies),
:class:`capture.receiver.sequence_checks.SequenceChecks` (gaps and repairs),
:class:`capture.receiver.keepalive.Keepalive` (our pings),
:class:`capture.receiver.closing.Closer` (the stop request and the closing
handshakes) and :class:`capture.receiver.backoff.Backoff` (failure counters
and the wait between attempts).  They act through a few callables the
connection hands them (write a record, send a frame, go live), never by
reading its attributes.

Errors (rooted in :class:`common.errors.CaptureError`)::

    CaptureError
    └── ConnectionStateError         an event not allowed in the current state (a bug)
"""
from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Iterable

from common.errors import ConfigError
from ring.frame import FrameType
from ring.producer import Producer

from capture.receiver.backoff import Backoff
from capture.receiver.closing import Closer
from capture.receiver.keepalive import Keepalive
from capture.receiver.lifecycle import (RECORD_KIND, TRANSITIONS, ConnectionStateError, Event, State,
                                        Timing, error_text, log_record)
from capture.receiver.repair import Integrity
from capture.receiver.replies import Replies
from capture.receiver.sequence_checks import SequenceChecks
from capture.receiver import transport as _transport
from capture.receiver.transport import ConnectFailed, Transport, make_transport
from capture.venues.base import CONTROL_MAX, Classified, Kind
from capture.venues.subscribe import Request

S, E = State, Event


#: Handshake statuses that mean "the credentials were refused".
AUTH_STATUSES = frozenset({401, 403})

_DATA = int(FrameType.DATA)
_JSON_OPEN = frozenset(b"{[")
_JSON_CLOSE = frozenset(b"}]")
#: byte value -> "may end a JSON value" (a tuple index is cheaper than a set lookup)
_ENDS_JSON = tuple(b in _JSON_CLOSE for b in range(256))


class Connection:
    """One WebSocket connection of a shard, reconnecting until stopped.

    Args:
        producer: the shard's ring producer (shared by its connections).
        conn_id: 0..65535, written in every frame header of this connection.
        name: e.g. ``kraken-3`` (the plan's connection id).
        venue_cls: a class from :data:`capture.venues.VENUES`.
        url: WebSocket URL.
        members: instruments (symbols / token ids / tickers) to subscribe.
        transport: ``"picows"`` or ``"websockets"``.
        timing: intervals.
        options: venue options (``channels``, ``depth``, ``signer`` ...).
        index: position in the shard, for the staggered start.
        rng: randomness for jitter (seed it in tests).
        integrity: the receiver's integrity state; enables sequence-gap
            checking (venues with a ``seq_layout``) and per-symbol repairs.
    """

    # The attributes the hot path touches for every frame live in slots
    # (a fixed offset, cheaper than the instance dict); the rest in __dict__.
    __slots__ = ("producer", "conn_id", "_frames", "_nbytes", "refused", "_last_data_ns", "_peek",
                 "_seq_match", "_fast", "__dict__", "__weakref__")

    def __init__(self, producer: Producer, conn_id: int, name: str, venue_cls: type, url: str,
                 members: Iterable[str], *, transport: str = "picows", timing: Timing = Timing(),
                 options: dict[str, Any] | None = None, index: int = 0,
                 rng: random.Random | None = None, max_message: int | None = None,
                 integrity: Integrity | None = None) -> None:
        if not 0 <= conn_id <= 0xFFFF:
            raise ConfigError(None, "conn_id", f"{conn_id} does not fit in 16 bits")
        self.producer = producer
        self.conn_id = conn_id
        self.name = name
        self.venue = venue_cls
        self.url = url
        self.members: list[str] = list(dict.fromkeys(members))
        self.transport_name = transport
        self.timing = timing
        self.index = index
        self.rng = rng or random.Random()
        self.max_message = max_message
        self.subscriber = venue_cls.subscriber(venue_cls, dict(options or {}))
        ka = venue_cls.keepalive
        # our pings and their answers (an object of its own)
        self.keepalive = Keepalive(ka.client_ping_interval if timing.ping_interval is None
                                   else timing.ping_interval, timing.pong_timeout)
        self.app_ping = ka.app_ping
        self.silence_ns = int((timing.silence_timeout or 0) * 1e9)
        self.state = State.IDLE
        self.transport: Transport | None = None
        self.attempt = 0
        # counters (read by the receiver for stats and metrics); frames, nbytes
        # and last_data_ns add what the compiled path took (see _fast)
        self._frames = 0
        self.malformed = 0
        self.refused = 0
        self._nbytes = 0
        self.errors = 0
        # failure counters and the wait between attempts (an object of its own)
        self.backoff = Backoff(timing, self.rng)
        self._last_data_ns = 0
        self.live_since = 0.0
        self.live_ns = 0          # wall time of the last transition to live
        self.live_frames = 0      # frames received before it, on this connection
        self.history: list[tuple[State, Event, State]] = []
        # the subscription replies of the current attempt (an object of its own)
        self.replies = Replies(self.subscriber, timing, record=self._record, send=self._send_text,
                               auth_error=self._auth_error, settled=self._replies_settled,
                               sent=self._set_peek, lost=self._subscription_lost,
                               acked_symbol=self._acked_symbol)
        self.subscriptions_lost = 0   # subscriptions the venue ended (resubscribed)
        self._peek = CONTROL_MAX
        # the stop request and the closing handshakes (an object of its own)
        self.closer = Closer(timing, frames=lambda: self.frames, record=self._record)
        self.task: asyncio.Task | None = None
        self._last_close: Any = None
        # integrity: sequence checks and repairs (an object of its own; the
        # hot path holds its head match and its gap table, see _on_message)
        self.integrity = integrity
        self.checks = SequenceChecks(venue_cls, self.subscriber, integrity, timing,
                                     record=self._record, can_send=self._can_send,
                                     send=self._send_text, send_requests=self._send_requests)
        self._seq_match = self.checks.match
        self._seq_last = self.checks.detector.table
        # The compiled hot path (picows only): complete data messages above
        # the peek size go from picows's buffer to the ring with no Python
        # call.  Not where every frame needs a sequence check.
        self._fast = None
        fp = _transport._fastpath
        if transport == "picows" and fp is not None:
            self._fast = fp.FastState(producer, conn_id, self._odd_large_guarded,
                                             *producer.c_handles())
            self._fast.enabled = self._seq_match is None
        self._auth_close = False    # close this connection (auth error code on a live one)
        #: (time ns, text) of the latest failure record, for the status file
        self.last_error: tuple[int, str] | None = None

    # -- state machine -------------------------------------------------------
    def _fire(self, event: Event, **fields: Any) -> State:
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise ConnectionStateError(self.name, self.state, event)
        old, self.state = self.state, new
        self.history.append((old, event, new))
        self._record(RECORD_KIND[event], **{"from": old.value}, **fields)
        self._set_peek()
        return new

    def _record(self, kind: str, **fields: Any) -> None:
        self.producer.write_control(kind, ts=time.time_ns(), conn=self.conn_id,
                                    conn_name=self.name, state=self.state.value, **fields)
        log_record(self.name, self.state, kind, fields)
        err = error_text(kind, fields)
        if err is not None:
            self.last_error = (time.time_ns(), err)

    def _set_peek(self) -> None:
        if self.state is not S.LIVE or self.replies.pending():
            self._peek = CONTROL_MAX
        elif self.keepalive.outstanding:
            self._peek = max(self.timing.peek_bytes, 256)
        else:
            self._peek = self.timing.peek_bytes
        if self._fast is not None:
            self._fast.peek = self._peek

    @property
    def frames(self) -> int:
        f = self._fast
        return self._frames if f is None else self._frames + f.frames

    @property
    def nbytes(self) -> int:
        f = self._fast
        return self._nbytes if f is None else self._nbytes + f.nbytes

    @property
    def last_data_ns(self) -> int:
        f = self._fast
        return self._last_data_ns if f is None else max(self._last_data_ns, f.last_data_ns)

    @last_data_ns.setter
    def last_data_ns(self, ns: int) -> None:
        self._last_data_ns = ns
        if self._fast is not None:
            self._fast.last_data_ns = 0

    # -- the hot path ----------------------------------------------------------
    def _on_message(self, payload: bytes | memoryview, ts: int, flags: int) -> None:
        # The transport took ts before calling us; the ring write comes next,
        # before anything looks at the bytes.
        try:
            n = len(payload)
            p = self.producer
            # bytes go straight to the C write: Producer.write's Python layer
            # would cost about as much as the write itself.  What that does not
            # take (a view, a full ring, a pending gap record, a frame for a
            # fragment chain) goes through Producer.write, which handles it all.
            if payload.__class__ is not bytes or p.raw_write(
                    p.handle, payload, n, _DATA, flags, self.conn_id, ts) < 0:
                if p.write(payload, _DATA, ts, self.conn_id, flags):
                    self.refused += 1   # FULL / TOO_LARGE: counted and recorded by the producer
            self._frames += 1
            self._nbytes += n
            sm = self._seq_match
            if sm is not None:
                # Sequence check: GapDetector.feed's rule inlined over its own
                # table for book frames (see capture.receiver.sequence_checks).
                hm = sm(payload)
                if hm is None:                  # outside the documented layout
                    self.checks.fallback(payload)
                elif hm.lastindex:              # a book frame (else: another type)
                    snap, key, seq = hm.group(1, 2, 3)
                    seq = int(seq)
                    last = self._seq_last.get(key)
                    self._seq_last[key] = seq
                    if snap is not None or (last is not None and seq != last + 1):
                        self.checks.event(payload, key, last, seq, snap is not None)
            if n > self._peek:
                self._last_data_ns = ts
                if not _ENDS_JSON[payload[n - 1]]:   # truncated, or not JSON at all
                    self._odd_large(payload, ts)
                return
            self._small(payload, ts)
        except Exception as exc:  # never let a bug in the glue drop the socket
            self._glue_error(exc)

    def _odd_large_guarded(self, payload: bytes, ts: int) -> None:
        """_odd_large for the compiled path: an exception must not reach
        picows, which would drop the socket."""
        try:
            self._odd_large(payload, ts)
        except Exception as exc:  # noqa: BLE001
            self._glue_error(exc)

    def _glue_error(self, exc: Exception) -> None:
        """A bug in the per-frame glue: counted, recorded (visible, not a flood)."""
        self.errors += 1
        if self.errors <= 10 or self.errors % 10_000 == 0:
            self._record("receiver_error", error=f"{type(exc).__name__}: {exc}", errors=self.errors)

    def _odd_large(self, payload: bytes | memoryview, ts: int) -> None:
        """A data frame that does not look like one JSON value at its ends
        (truncated, or not JSON): unless it is only whitespace around one, it
        is counted as malformed.  It is in the ring raw either way."""
        b = bytes(payload).strip()
        if not b or b[0] not in _JSON_OPEN or b[-1] not in _JSON_CLOSE:
            self.malformed += 1

    def _small(self, payload: bytes | memoryview, ts: int) -> None:
        raw = payload if payload.__class__ is bytes else bytes(payload)
        c = self.venue.classify(raw)
        k = c.kind
        if k is Kind.DATA or k is Kind.UNKNOWN:
            # classify reads data frames by their head only: check the ends too
            self._last_data_ns = ts
            if raw[0] not in _JSON_OPEN or raw[-1] not in _JSON_CLOSE:
                self._odd_large(raw, ts)
        elif k is Kind.PONG:
            self._pong()
        elif k is Kind.HEARTBEAT or k is Kind.INFO:
            pass
        elif k is Kind.MALFORMED:
            self.malformed += 1
        else:  # ACK, ERROR, UNSUBSCRIBED
            self.replies.reply(c)

    def _on_pong(self, payload: bytes) -> None:
        self._pong()

    def _pong(self) -> None:
        if self.keepalive.answered():
            self._set_peek()

    # -- authentication failures --------------------------------------------------
    def _auth_error(self, status: int | None, code: int | None, error: str) -> None:
        """The venue refused our credentials: record and log it (never the
        key: only the status/code and the venue's text), then back off."""
        n, cap = self.backoff.refused_auth()
        fields: dict[str, Any] = {"status": status} if status is not None else {"code": code}
        self._record("auth_failed", **fields, error=error, failures=n, retry_within_s=cap)
        if status is None:
            self._auth_close = True   # on a live connection: close it, then back off

    def _opened(self) -> None:
        # Called by the transport after the handshake, before any message.
        self._fire(E.OPENED, attempt=self.attempt, url=self.url)

    # -- what the parts act through ------------------------------------------------
    def _send_text(self, payload: bytes) -> None:
        t = self.transport
        assert t is not None
        t.send_text(payload)

    def _send_requests(self, reqs: list[Request], reason: str) -> None:
        self.replies.send(reqs, reason)

    def _can_send(self) -> bool:
        t = self.transport
        return self.state in (S.LIVE, S.SUBSCRIBING) and t is not None and not t.closed

    def _acked_symbol(self, symbol: str) -> None:
        # a checksum repair is done once its resubscription is acked
        self.checks.repair_done(("checksum", symbol))

    def _subscription_lost(self, c: Classified, r: Request | None) -> None:
        """The venue ended a subscription (Kalshi code 25, buffer overflow:
        messages were lost).  Recorded as a gap (record, counter, and the
        record's log line: a LOGGED kind of capture.receiver.lifecycle),
        its sequence state forgotten, and its markets subscribed again on this
        connection at once, so none stays silent until a reconnect."""
        channel, markets, first = self.subscriber.lost(c.sid, r)
        if markets is None:
            markets = list(self.members)
        if c.sid is not None:
            self.checks.forget(c.sid)
        self.subscriptions_lost += 1
        if self.integrity is not None:
            self.integrity.count("subscription_lost")
        self._record("subscription_lost", venue=self.venue.name, sid=c.sid, channel=channel,
                     markets=markets, code=c.code, error=c.detail, req_id=c.req_id)
        if markets and self._can_send():
            for p in first:
                self._record("unsubscribe_sent", channel=channel, symbols=markets,
                             reason="subscription_lost")
                self._send_text(p)
            self.replies.send(self.subscriber.resubscribe(channel, markets), "subscription_lost")

    def _replies_settled(self) -> None:
        """Nothing pending any more: live (from subscribing), else peek less."""
        if self.state is S.SUBSCRIBING:
            self._go_live()
        else:
            self._set_peek()

    def _go_live(self) -> None:
        self.live_since = time.monotonic()
        self.live_ns = self.last_data_ns = time.time_ns()
        self.live_frames = self.frames
        self._fire(E.SUBSCRIBED, **self.replies.counts())

    # -- re-discovery ------------------------------------------------------------
    def update_members(self, members: Iterable[str]) -> tuple[list[str], list[str]]:
        """Change the instrument set; on a live connection, subscribe the new
        ones (and unsubscribe the gone ones) at once where the venue allows,
        else they apply from the next connect.  Returns ``(added, removed)``."""
        new = list(dict.fromkeys(members))
        old = set(self.members)
        added = [m for m in new if m not in old]
        removed = [m for m in self.members if m not in set(new)]
        self.members = new
        t = self.transport
        if (self.state in (S.LIVE, S.SUBSCRIBING) and t is not None and not t.closed
                and self.subscriber.live_add):
            if added:
                self._send_requests(self.subscriber.subscribe(added), "rediscovery")
            for ch, syms, payload in (self.subscriber.unsubscribe(removed) if removed else []):
                self._record("unsubscribe_sent", channel=ch, symbols=list(syms))
                t.send_text(payload)
        return added, removed

    # -- the lifecycle -----------------------------------------------------------
    def start(self) -> asyncio.Task:
        self.task = asyncio.get_running_loop().create_task(self.run(), name=self.name)
        return self.task

    def stop(self) -> None:
        """Ask the connection to close cleanly and end (see :meth:`run`)."""
        self.closer.request()

    @property
    def stopping(self) -> bool:
        return self.closer.requested

    async def run(self) -> None:
        """Connect, subscribe, watch, reconnect... until :meth:`stop`."""
        self.closer.arm()
        tm = self.timing
        try:
            delay = self.index * tm.stagger + self.rng.uniform(0.0, tm.stagger_jitter)
            if not await self.closer.sleep(delay):
                return
            self.attempt = 1
            self._fire(E.START, attempt=self.attempt, url=self.url)
            while True:
                try:
                    await self._attempt()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a bug must cost one reconnect, not the connection
                    self._recover(exc)
                if self.stopping:
                    return
                delay, cap = self.backoff.next(self.live_since)
                self._record("reconnect", attempt=self.attempt + 1, delay=round(delay, 6),
                             failures=self.backoff.failures, cap=cap)
                if not await self.closer.sleep(delay):
                    return
                self.attempt += 1
                self._fire(E.RETRY, attempt=self.attempt, url=self.url)
        finally:
            t = self.transport
            if t is not None and not t.closed:
                t.abort()
            self._fire(E.STOP, frames=self.frames, malformed=self.malformed,
                       refused=self.refused, reconnects=self.backoff.reconnects)

    async def _attempt(self) -> None:
        """One connection attempt, from connecting until the connection is over."""
        tm = self.timing
        self.subscriber.fresh()
        self.checks.fresh()
        self._auth_close = False
        self.replies.fresh()      # a new connection subscribes everything afresh
        self.keepalive.fresh()
        self.live_since = 0.0
        kw: dict[str, Any] = {}
        if self.max_message:
            kw["max_message"] = self.max_message
        if self._fast is not None:
            kw["fast"] = self._fast
        t = make_transport(self.transport_name, self._on_message, on_open=self._opened,
                           on_pong=self._on_pong, **kw)
        self.transport = t
        try:
            await t.connect(self.url, self.subscriber.headers(), tm.connect_timeout)
        except ConnectFailed as exc:
            if self.state is S.SUBSCRIBING:  # opened, then failed (should not happen)
                self._fire(E.LOST, code=1006, reason=exc.reason, by="error")
            else:
                self.backoff.why = "connect_failed"
                self._fire(E.CONNECT_FAILED, status=exc.status, error=exc.reason)
                if exc.status in AUTH_STATUSES and self.subscriber.auth_error_code is not None:
                    self.backoff.why = "auth"
                    self._auth_error(exc.status, None, exc.reason)
            return
        except asyncio.CancelledError:
            t.abort()
            raise
        if self.state is S.CONNECTING:  # on_open is always called first; be safe
            self._opened()
        if self.members:
            self._send_requests(self.subscriber.subscribe(self.members), "connect")
        if not self.subscriber.acks or not self.replies.pending():
            self._go_live()
        await self._watch(t)

    def _recover(self, exc: Exception) -> None:
        """After an unexpected error inside an attempt: record it, drop the
        socket and continue into backing_off like any other failure."""
        error = f"{type(exc).__name__}: {exc}"
        self._record("receiver_error", error=error)
        t = self.transport
        if t is not None and not t.closed:
            t.abort()
        self.backoff.why = "error"
        if self.state is S.CONNECTING:
            self._fire(E.CONNECT_FAILED, status=None, error=error)
        elif self.state in (S.SUBSCRIBING, S.LIVE, S.STALE):
            self._last_close = (1011, error, "error")
            self._fire(E.LOST, code=1011, reason=error, by="error")

    def _tick(self) -> float:
        tm = self.timing
        c = [0.5, tm.subscribe_timeout / 4, tm.pong_timeout / 4, tm.subscribe_retry / 4]
        if self.keepalive.interval:
            c.append(self.keepalive.interval / 4)
        if self.silence_ns:
            c.append(self.silence_ns / 4e9)
        return max(0.005, min(c))

    async def _watch(self, t: Transport) -> None:
        """Keepalives, reply timeouts and the silence watchdog, until the
        connection is over (or stop)."""
        stop = self.closer.stop
        assert stop is not None
        tick = self._tick()
        loop = asyncio.get_running_loop()
        self.keepalive.start(loop.time())
        closed = asyncio.ensure_future(t.wait_closed())
        try:
            while True:
                await asyncio.wait((closed, stop), timeout=tick,
                                   return_when=asyncio.FIRST_COMPLETED)
                if closed.done():
                    info = closed.result()
                    self._lost(info.code, info.reason, info.by)
                    return
                if stop.done():
                    await self.closer.for_stop(t)
                    return
                if self._auth_close:
                    self._auth_close = False
                    await self._replace(t, closed, "authentication failed")
                    return
                now = loop.time()
                if self.state in (S.LIVE, S.SUBSCRIBING):
                    self.replies.send_due_retries()
                self.replies.expire(time.time_ns())
                # keepalive
                waited = self.keepalive.overdue(now)
                if waited is not None:
                    self.backoff.why = "keepalive_timeout"
                    self._fire(E.KEEPALIVE_TIMEOUT, waited_s=round(waited, 3))
                    await self._replace(t, closed, "keepalive timeout")
                    return
                if self.state in (S.LIVE, S.SUBSCRIBING) and self.keepalive.due(now):
                    if self.app_ping:
                        payload = self.subscriber.app_ping()
                        if payload is not None:
                            t.send_text(payload)
                    else:
                        t.send_ping(b"")
                    self._set_peek()
                # silence watchdog
                if self.silence_ns and self.state is S.LIVE:
                    silent = time.time_ns() - self.last_data_ns
                    if silent > self.silence_ns:
                        self.backoff.why = "silence"
                        self._fire(E.SILENCE, silent_s=round(silent / 1e9, 3),
                                   last_data_ns=self.last_data_ns)
                        await self._replace(t, closed, "no data")
                        return
        finally:
            if not closed.done():
                closed.cancel()

    async def _replace(self, t: Transport, closed: asyncio.Future, why: str) -> None:
        """Close a stale connection (the run loop then opens a new one)."""
        info = await self.closer.replace(t, why)
        self._lost(info.code, info.reason, "client")

    def _lost(self, code: int, reason: str, by: str) -> None:
        self._last_close = (code, reason, by)
        if self.state is not S.STALE:   # stale: the reason is already set
            self.backoff.why = "server_close" if by == "server" else by
        self._fire(E.LOST, code=code, reason=reason, by=by)

    # -- introspection -------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters for records and the status file (read by capture.metrics)."""
        subscribed = self.replies.acked if self.subscriber.acks else (
            len(self.members) if self.state is S.LIVE else 0)
        return {"conn": self.name, "id": self.conn_id, "state": self.state.value,
                "frames": self.frames, "messages": self.frames, "bytes": self.nbytes,
                "malformed": self.malformed, "refused": self.refused,
                "reconnects": self.backoff.reconnects, "close_aborted": self.closer.aborted,
                "reconnect_reasons": dict(self.backoff.reasons),
                "attempt": self.attempt, "members": len(self.members), "subscribed": subscribed,
                "seq_gaps": self.checks.seq_gaps, "repairs": self.checks.repairs,
                "repairs_suppressed": self.checks.suppressed,
                "auth_failures": self.backoff.auth_failures,
                "subscribe_retries": self.replies.subscribe_retries,
                "subscriptions_lost": self.subscriptions_lost,
                "last_data_ns": self.last_data_ns, "live_since_ns": self.live_ns,
                "silence_timeout": (self.silence_ns / 1e9) or None}
