"""A connection's subscription replies: acks, refusals, rate-limit retries,
and the move to live once nothing is pending.

A mixin of :class:`capture.receiver.connection.Connection` (it works on the
connection's requests, counters and records); the record kinds are listed
there.
"""
from __future__ import annotations

import time

from capture.receiver.lifecycle import Event, State
from capture.venues.base import Classified, Kind
from capture.venues.subscribe import Request

S, E = State, Event


class SubscriptionReplies:
    """Matching the venue's replies to the requests sent, and sending them."""

    __slots__ = ()

    def _find(self, c: Classified) -> Request | None:
        if c.req_id is not None:
            for r in self._requests:
                if r.req_id == c.req_id:
                    return r
        for r in self._requests:
            if (c.channel, c.symbol) in r.pending or (c.channel, "*") in r.pending:
                return r
        return None

    def _reply(self, c: Classified) -> None:
        if c.kind is Kind.UNSUBSCRIBED:
            return
        r = self._find(c)
        if c.kind is Kind.ACK:
            if r is not None:
                ch = r.channel if c.channel is None else c.channel
                key = (ch, c.symbol) if (ch, c.symbol) in r.pending else (ch, "*")
                r.pending.discard(key)
                self.subscriber.acked(r, c.sid, ch)
            self._acked += 1
            self._sub_retry_n = 0
            self._record("subscribed", channel=c.channel or (r.channel if r else None),
                         symbol=c.symbol, req_id=c.req_id)
        else:  # ERROR
            if r is not None and c.symbol is not None:
                ch = r.channel
                r.pending.discard((ch, c.symbol))
                self._failed += 1
                self._record("subscribe_failed", channel=ch, symbols=[c.symbol],
                             error=c.detail, code=c.code, req_id=c.req_id)
            elif r is not None and c.req_id is not None:
                syms = sorted(s for _, s in r.pending)
                r.pending.clear()
                self._failed += len(syms)
                retry = self._schedule_retry(r.channel, syms, c.detail)
                self._record("subscribe_failed", channel=r.channel, symbols=syms,
                             error=c.detail, code=c.code, req_id=c.req_id,
                             **({"retry_in_s": retry} if retry is not None else {}))
            else:
                self._record("venue_error", error=c.detail, code=c.code, req_id=c.req_id)
            if c.code is not None and c.code == self.subscriber.auth_error_code:
                self._auth_error(None, c.code, c.detail or "")
        self._maybe_live()

    def _schedule_retry(self, channel: str | None, symbols: list[str],
                        detail: str | None) -> float | None:
        """A subscribe refused for the venue's request rate is sent again on
        this connection after a delay (doubling per consecutive refusal, up to
        ``subscribe_retry_cap``) instead of waiting for the next reconnect.
        Returns the delay, or None when the refusal is not about the rate."""
        if not symbols or not self.subscriber.rate_limited(detail):
            return None
        tm = self.timing
        delay = min(tm.subscribe_retry_cap, tm.subscribe_retry * (2 ** self._sub_retry_n))
        self._sub_retry_n += 1
        self._sub_retries.append((time.monotonic() + delay, channel, symbols))
        return round(delay, 3)

    def _send_due_retries(self) -> None:
        if not self._sub_retries or self.state not in (S.LIVE, S.SUBSCRIBING):
            return
        now = time.monotonic()
        due = [x for x in self._sub_retries if x[0] <= now]
        if not due:
            return
        self._sub_retries = [x for x in self._sub_retries if x[0] > now]
        for _, channel, symbols in due:
            self.subscribe_retries += 1
            self._send_requests(self.subscriber.resubscribe(channel, symbols), "rate_limit_retry")

    def _maybe_live(self) -> None:
        if any(r.pending for r in self._requests):
            return
        if self.state is S.SUBSCRIBING:
            self._go_live()
        else:
            self._set_peek()

    def _go_live(self) -> None:
        self.live_since = time.monotonic()
        self.live_ns = self.last_data_ns = time.time_ns()
        self.live_frames = self.frames
        self._fire(E.SUBSCRIBED, acked=self._acked, failed=self._failed,
                   timed_out=self._timed_out)

    # -- sending -----------------------------------------------------------------
    def _send_requests(self, reqs: list[Request], reason: str) -> None:
        t = self.transport
        assert t is not None
        for r in reqs:
            r.sent_ns = time.time_ns()
            self._requests.append(r)
            self._record("subscribe_sent", channel=r.channel, symbols=list(r.symbols),
                         req_id=r.req_id, reason=reason)
            t.send_text(r.payload)
        self._set_peek()
