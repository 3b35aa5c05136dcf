"""A connection's subscription replies: acks, refusals, rate-limit retries,
and the move to live once nothing is pending.

A mixin of :class:`capture.receiver.connection.Connection` (it works on the
connection's requests, counters and records); the record kinds are listed
there.
"""
from __future__ import annotations

import logging
import time

from capture.receiver.lifecycle import Event, State
from capture.receiver.subscriptions import Request
from capture.venues.base import Classified, Kind

S, E = State, Event
log = logging.getLogger("capture.receiver.connection")


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
            if c.symbol is not None and self._repairing:
                # a checksum repair is done once its resubscription is acked
                self._repairing.pop(("checksum", c.symbol), None)
            self._acked += 1
            self._sub_retry_n = 0
            self._record("subscribed", channel=c.channel or (r.channel if r else None),
                         symbol=c.symbol, req_id=c.req_id)
        else:  # ERROR
            if self.subscriber.terminal(c.code):
                self._subscription_lost(c, r)
                self._maybe_live()
                return
            if r is not None and c.symbol is not None:
                ch = r.channel
                r.pending.discard((ch, c.symbol))
                self._failed += 1
                kind = self._retry_kind(r, c)
                retry = self._schedule_retry(ch, [c.symbol], c.detail, c.code, kind=kind,
                                             known=kind == "repair")
                self._record("subscribe_failed", channel=ch, symbols=[c.symbol],
                             error=c.detail, code=c.code, req_id=c.req_id,
                             **({"retry_in_s": retry} if retry is not None else {}))
            elif r is not None and c.req_id is not None:
                syms = sorted(s for _, s in r.pending)
                if "*" in syms:   # acked once for the whole request (Kalshi)
                    syms = list(r.symbols)
                r.pending.clear()
                self._failed += len(syms)
                retry = self._schedule_retry(r.channel, syms, c.detail, c.code,
                                             kind=self._retry_kind(r, c))
                self._record("subscribe_failed", channel=r.channel, symbols=syms,
                             error=c.detail, code=c.code, req_id=c.req_id,
                             **({"retry_in_s": retry} if retry is not None else {}))
            else:
                limited = self.subscriber.rate_limited(c.detail) or \
                    self.subscriber.rate_limited_code(c.code)
                if limited and c.req_id is None:
                    # A refusal that names no request (Kraken's bare
                    # {"Error": "Exceeded msg rate"}): the acks still pending
                    # when their request times out were the refused ones, and
                    # are retried then instead of waiting for a reconnect.
                    self._rate_refused += 1
                self._record("venue_error", error=c.detail, code=c.code, req_id=c.req_id,
                             **({"rate_limited": True} if limited else {}))
            if c.code is not None and c.code == self.subscriber.auth_error_code:
                self._auth_error(None, c.code, c.detail or "")
        self._maybe_live()

    def _subscription_lost(self, c: Classified, r: Request | None) -> None:
        """The venue ended a subscription (Kalshi code 25, buffer overflow:
        messages were lost).  Recorded as a gap (record, counter, log line),
        its sequence state forgotten, and its markets subscribed again on this
        connection at once, so none stays silent until a reconnect."""
        if r is not None:
            r.pending.clear()
        channel, markets, first = self.subscriber.lost(c.sid, r)
        if markets is None:
            markets = list(self.members)
        if c.sid is not None:
            self._seq_last.pop(str(c.sid).encode(), None)
            self._repairing.pop(c.sid, None)
        self.subscriptions_lost += 1
        if self.integrity is not None:
            self.integrity.count("subscription_lost")
        self._record("subscription_lost", venue=self.venue.name, sid=c.sid, channel=channel,
                     markets=markets, code=c.code, error=c.detail, req_id=c.req_id)
        log.warning("%s: the venue ended subscription sid=%s (%s, code %s): %d market(s) "
                    "lost messages; subscribing them again", self.name, c.sid, c.detail,
                    c.code, len(markets))
        t = self.transport
        if markets and self.state in (S.LIVE, S.SUBSCRIBING) and t is not None and not t.closed:
            for p in first:
                self._record("unsubscribe_sent", channel=channel, symbols=markets,
                             reason="subscription_lost")
                t.send_text(p)
            self._send_requests(self.subscriber.resubscribe(channel, markets),
                                "subscription_lost")

    def _retry_kind(self, r: Request, c: Classified) -> str:
        """A refused repair is retried whole: its unsubscribe may have been
        refused too (the venue answers the resubscribe "already subscribed"),
        and a subscribe alone would then leave the book unrepaired."""
        if r.reason in ("repair", "repair_retry") and (
                self.subscriber.rate_limited(c.detail) or self.subscriber.already(c.detail)
                or self.subscriber.rate_limited_code(c.code)):
            return "repair"
        return "subscribe"

    def _schedule_retry(self, channel: str | None, symbols: list[str],
                        detail: str | None, code: int | None = None,
                        known: bool = False, kind: str = "subscribe") -> float | None:
        """A subscribe refused for the venue's request rate is sent again on
        this connection after a delay (doubling per consecutive refusal, up to
        ``subscribe_retry_cap``) instead of waiting for the next reconnect.
        Returns the delay, or None when the refusal is not about the rate."""
        if not symbols or not (known or self.subscriber.rate_limited(detail)
                               or self.subscriber.rate_limited_code(code)):
            return None
        tm = self.timing
        delay = min(tm.subscribe_retry_cap, tm.subscribe_retry * (2 ** self._sub_retry_n))
        self._sub_retry_n += 1
        self._sub_retries.append((time.monotonic() + delay, channel, symbols, kind))
        return round(delay, 3)

    def _send_due_retries(self) -> None:
        if not self._sub_retries or self.state not in (S.LIVE, S.SUBSCRIBING):
            return
        now = time.monotonic()
        due = [x for x in self._sub_retries if x[0] <= now]
        if not due:
            return
        self._sub_retries = [x for x in self._sub_retries if x[0] > now]
        for _, channel, symbols, kind in due:
            self.subscribe_retries += 1
            if kind == "repair":
                self._repair_again(symbols)
            else:
                self._send_requests(self.subscriber.resubscribe(channel, symbols),
                                    "rate_limit_retry")

    def _repair_again(self, symbols: list[str]) -> None:
        """Send a refused repair again (not charged to the symbol's bucket: it
        is the same repair, not a new one)."""
        t = self.transport
        assert t is not None
        for sym in symbols:
            action, payloads, reqs = self.subscriber.repair(sym, None)
            for p in payloads:
                self._record("unsubscribe_sent", channel="book", symbols=[sym], reason="repair_retry")
                t.send_text(p)
            if reqs:
                self._send_requests(reqs, "repair_retry")

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
            r.reason = reason
            self._requests.append(r)
            self._record("subscribe_sent", channel=r.channel, symbols=list(r.symbols),
                         req_id=r.req_id, reason=reason)
            t.send_text(r.payload)
        self._set_peek()
