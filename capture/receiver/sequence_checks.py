"""A connection's sequence checks and per-symbol repairs (see capture.receiver.repair).

:class:`SequenceChecks` owns that state: the last sequence number per stream
(a :class:`capture.venues.base.GapDetector`), the repairs in flight and the
counters.  Sequence checking is the only integrity work on the receive path;
a detected gap or checksum mismatch repairs the one symbol, rate-limited.

One gap rule
------------
The rule is :meth:`GapDetector.feed <capture.venues.base.GapDetector.feed>`:
the first number on a stream or a snapshot sets the baseline, a break is
reported once and the run continues from the number that arrived.  Frames
outside the venue's documented layout go through ``feed`` itself
(:meth:`SequenceChecks.fallback`).  For book frames in the documented
layout the connection's hot path inlines the same rule over the detector's
own table (:attr:`GapDetector.table`, the one dict both forms update) and
calls :meth:`SequenceChecks.event` only on a snapshot or a break; a test
drives every short sequence of numbers and snapshots through both forms and
requires the same reports (tests/capture/receiver/test_sequence_rule.py).
"""
from __future__ import annotations

import time
from typing import Any, Callable

from capture.receiver.lifecycle import Timing
from capture.receiver.repair import Integrity, SeqScanner
from capture.venues.base import GapDetector
from capture.venues.subscribe import Request, Subscriber


class SequenceChecks:
    """Gap detection per stream, and rate-limited repairs, for one connection.

    Args:
        venue_cls: the venue (its ``sequence`` names a gap's symbol).
        subscriber: the connection's subscriber (builds the repairs).
        integrity: the receiver's shared integrity state; None: no checks,
            no repairs.
        timing: the connection's intervals (a repair counts as in flight
            for ``subscribe_timeout``).
        record: writes one control record (``record(kind, **fields)``).
        can_send: whether the connection can send now (live or subscribing,
            transport open).
        send: sends one text frame; ``send_requests(reqs, reason)`` sends
            subscribe requests whose replies are awaited.
    """

    def __init__(self, venue_cls: type, subscriber: Subscriber, integrity: Integrity | None,
                 timing: Timing, *, record: Callable[..., None], can_send: Callable[[], bool],
                 send: Callable[[bytes], None],
                 send_requests: Callable[[list[Request], str], None]) -> None:
        self.venue = venue_cls
        self.subscriber = subscriber
        self.integrity = integrity
        self.timing = timing
        self._record = record
        self._can_send = can_send
        self._send = send
        self._send_requests = send_requests
        on = integrity is not None and getattr(venue_cls, "seq_layout", None) is not None
        self.scanner: SeqScanner | None = SeqScanner(venue_cls) if on else None
        #: the head match of the hot path (None: no sequence checks)
        self.match = self.scanner.match if self.scanner is not None else None
        self.detector = GapDetector()
        self._repairing: dict[Any, float] = {}   # stream key -> monotonic time of the repair
        self.seq_gaps = 0
        self.repairs = 0
        self.suppressed = 0

    def fresh(self) -> None:
        """A new attempt: every stream starts again (in place: the hot path
        holds the detector's table)."""
        self.detector.table.clear()
        self._repairing.clear()

    # -- detection -------------------------------------------------------------
    def fallback(self, payload: bytes | memoryview) -> None:
        """A frame the head match did not answer: the venue module decides,
        and :meth:`GapDetector.feed` applies the rule."""
        assert self.scanner is not None
        raw = payload if isinstance(payload, bytes) else bytes(payload)
        r = self.scanner.fallback(raw)
        if r is None:
            return
        key, seq, snapshot = r
        if snapshot and self._shared(key):
            snapshot = False   # it continues the shared numbering (see event)
        gap = self.detector.feed(key, seq, snapshot)
        if snapshot:
            self._snapshot(key)
        elif gap is not None:
            self.gap(raw, key, gap.expected, gap.got)

    def event(self, payload: bytes | memoryview, key: bytes, last: int | None, seq: int,
              snapshot: bool) -> None:
        """From the hot path: a snapshot (the baseline moved; a repair of
        that stream is done) or a break after ``last``.

        A snapshot re-bases a stream that numbers one market.  On a stream
        that numbers several (a Kalshi sid shared by markets) it continues the
        shared numbering, so it is checked like any other message: one
        market's snapshot must not hide a message lost by another."""
        if snapshot and self._shared(key):
            if last is None or seq == last + 1:
                return
            snapshot = False
        if snapshot:
            self._snapshot(key)
            return
        assert last is not None
        raw = payload if isinstance(payload, bytes) else bytes(payload)
        self.gap(raw, key, last + 1, seq)

    def _shared(self, key: bytes) -> bool:
        """Whether stream ``key`` numbers several markets (a shared Kalshi sid)."""
        assert self.scanner is not None
        return len(self.subscriber.markets_of(self.scanner.canonical(key))) > 1

    def forget(self, sid: int) -> None:
        """A subscription the venue ended: its numbering starts again."""
        self.detector.table.pop(str(sid).encode(), None)
        self._repairing.pop(sid, None)

    def repair_done(self, stream_key: Any) -> None:
        """The repair of ``stream_key`` was acked: another may follow."""
        if self._repairing:
            self._repairing.pop(stream_key, None)

    def _snapshot(self, key: bytes) -> None:
        if self._repairing:
            assert self.scanner is not None
            self._repairing.pop(self.scanner.canonical(key), None)

    def gap(self, raw: bytes, key_bytes: bytes, expected: int, got: int) -> None:
        """Record a break in stream ``key_bytes`` and repair its symbol."""
        assert self.scanner is not None
        key = self.scanner.canonical(key_bytes)
        self.seq_gaps += 1
        symbol = self.subscriber.symbol_of(key)
        if symbol is None:
            info = self.venue.sequence(raw)
            symbol = info.symbol if info is not None else None
        where = {"sid": key} if isinstance(key, int) else {"feed": key[0] if isinstance(key, tuple) else key}
        markets = self.subscriber.markets_of(key)
        if len(markets) > 1:   # a shared sid: every market of it is repaired
            where["markets"] = markets
        self.integrity_failure("seq_gap", symbol, key, **where, expected=expected, got=got,
                               missing=max(0, got - expected))

    # -- repair ------------------------------------------------------------------
    def integrity_failure(self, kind: str, symbol: str | None, stream_key: Any = None,
                          **fields: Any) -> str:
        """Record one detection (``seq_gap``, ``checksum_mismatch``) and repair
        ``symbol`` alone, rate-limited.  Returns what happened to the repair:
        "sent", "pending" (one is in flight for this stream), "suppressed",
        "unavailable" (not live, or nothing to send)."""
        integ = self.integrity
        assert integ is not None
        integ.count(kind)
        now = time.monotonic()
        t = self._repairing.get(stream_key) if stream_key is not None else None
        pending = t is not None and now - t < self.timing.subscribe_timeout
        extra = {"repair": "pending"} if pending else {}
        self._record(kind, venue=integ.venue, symbol=symbol, **fields, **extra)
        if pending:
            return "pending"
        if symbol is None:
            return "unavailable"
        return self._repair(integ, symbol, kind, stream_key, now)

    def _repair(self, integ: Integrity, symbol: str, reason: str, stream_key: Any,
                now: float) -> str:
        if not self._can_send():
            return "unavailable"   # a reconnect brings fresh snapshots anyway
        action, payloads, reqs = self.subscriber.repair(symbol, stream_key)
        if not action:
            return "unavailable"
        if not integ.limiter.allow(symbol):
            self.suppressed += 1
            integ.count("repair_suppressed")
            self._record("repair_suppressed", venue=integ.venue, symbol=symbol, reason=reason,
                         burst=integ.limiter.burst, window_s=integ.limiter.window)
            return "suppressed"
        self.repairs += 1
        integ.count("repair")
        self._record("repair", venue=integ.venue, symbol=symbol, reason=reason, action=action)
        for channel, p in payloads:
            self._record("unsubscribe_sent", channel=channel, symbols=[symbol], reason="repair")
            self._send(p)
        if reqs:
            self._send_requests(reqs, "repair")
        if stream_key is not None:
            self._repairing[stream_key] = now
        return "sent"
