"""A connection's sequence checks and per-symbol repairs (see capture.receiver.repair).

A mixin of :class:`capture.receiver.connection.Connection`: sequence checking is the
only integrity work on the receive path (the inlined book-frame case is in
``Connection._on_message``; the rest is here), and a detected gap or
checksum mismatch repairs the one symbol, rate-limited.
"""
from __future__ import annotations

import time
from typing import Any

from capture.receiver.lifecycle import State

S = State


class SequenceChecks:
    """Gap detection per stream, and rate-limited repairs."""

    __slots__ = ()

    def _seq(self, payload: bytes | memoryview, hm: Any) -> None:
        """A book frame's seq (``hm``: the head match) or a frame outside the
        documented layout (``hm`` None: the venue module decides).  Gap rule
        as :meth:`capture.venues.base.GapDetector.feed`, inlined (this runs
        for every book frame): the first number or a snapshot sets the
        baseline, a break is reported once and the run continues from it."""
        if hm is not None:
            snap, key, seq = hm.group(1, 2, 3)
            seq = int(seq)
            snapshot = snap is not None
        else:
            r = self._scan.fallback(  # type: ignore[union-attr]
                payload if payload.__class__ is bytes else bytes(payload))
            if r is None:
                return
            key, seq, snapshot = r
        last_seq = self._seq_last
        last = last_seq.get(key)
        last_seq[key] = seq
        if snapshot or (last is not None and seq != last + 1):
            self._seq_event(payload, key, last, seq, snapshot)

    def _seq_event(self, payload: bytes | memoryview, key: bytes, last: int | None, seq: int,
                   snapshot: bool) -> None:
        """A snapshot (the baseline moves; a repair of that stream is done) or a gap.

        A snapshot re-bases a stream that numbers one market.  On a stream
        that numbers several (a Kalshi sid shared by markets) it continues the
        shared numbering, so it is checked like any other message: one
        market's snapshot must not hide a message lost by another."""
        if snapshot:
            canon = self._scan.canonical(key)  # type: ignore[union-attr]
            if (last is not None and seq != last + 1
                    and len(self.subscriber.markets_of(canon)) > 1):
                raw = payload if payload.__class__ is bytes else bytes(payload)
                self._on_gap(raw, canon, last + 1, seq)
                return
            if self._repairing:
                self._repairing.pop(canon, None)
            return
        assert last is not None
        raw = payload if payload.__class__ is bytes else bytes(payload)
        self._on_gap(raw, self._scan.canonical(key), last + 1, seq)  # type: ignore[union-attr]

    def _on_gap(self, raw: bytes, key: Any, expected: int, got: int) -> None:
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
        return self._repair(symbol, kind, stream_key, now)

    def _repair(self, symbol: str, reason: str, stream_key: Any, now: float) -> str:
        integ = self.integrity
        assert integ is not None
        t = self.transport
        if self.state not in (S.LIVE, S.SUBSCRIBING) or t is None or t.closed:
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
            t.send_text(p)
        if reqs:
            self._send_requests(reqs, "repair")
        if stream_key is not None:
            self._repairing[stream_key] = now
        return "sent"
