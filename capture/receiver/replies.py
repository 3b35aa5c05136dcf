"""A connection's subscription replies: the requests sent on this attempt,
acks, refusals, rate-limit retries, reply timeouts, and when nothing is
pending any more.

:class:`Replies` owns that state; the connection holds one and gives it the
few things it acts through (write a record, send a text frame, report an
authentication refusal, "every reply is in").  The record kinds are listed
in :mod:`capture.receiver.connection`.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from capture.receiver.lifecycle import Timing
from capture.venues.base import Classified, Kind
from capture.venues.subscribe import Request, Subscriber


class Replies:
    """Matching the venue's replies to the requests sent, and sending them.

    Args:
        subscriber: the connection's venue subscriber.
        timing: the connection's intervals (retry delays, reply timeout).
        record: writes one control record (``record(kind, **fields)``).
        send: sends one text frame on the current transport.
        auth_error: ``auth_error(status, code, error)``: the venue refused
            the credentials.
        settled: called whenever a reply leaves nothing pending (the
            connection goes live, or adjusts what it peeks at).
        sent: called after requests were sent (replies are awaited: the
            connection peeks at larger frames).
        lost: ``lost(reply, request)``: the venue ended a subscription
            (a terminal error code: messages were lost); the connection
            records it and subscribes its markets again.
        acked_symbol: an instrument's subscription was acked (a checksum
            repair of it is done).
    """

    def __init__(self, subscriber: Subscriber, timing: Timing, *,
                 record: Callable[..., None], send: Callable[[bytes], None],
                 auth_error: Callable[[int | None, int | None, str], None],
                 settled: Callable[[], None], sent: Callable[[], None],
                 lost: Callable[[Classified, Request | None], None] = lambda c, r: None,
                 acked_symbol: Callable[[str], None] = lambda s: None) -> None:
        self.subscriber = subscriber
        self.timing = timing
        self._record = record
        self._send = send
        self._auth_error = auth_error
        self._settled = settled
        self._sent = sent
        self._lost = lost
        self._acked_symbol = acked_symbol
        self.subscribe_retries = 0     # for the life of the connection
        self.fresh()

    def fresh(self) -> None:
        """A new attempt: nothing sent, nothing pending, no retries due."""
        self.requests: list[Request] = []
        # subscriptions refused for the venue's request rate: (due monotonic,
        # channel, symbols, kind): kind "subscribe" sends the subscribe again,
        # "repair" the whole repair (unsubscribe + subscribe)
        self.retries: list[tuple[float, str | None, list[str], str]] = []
        self.retry_n = 0          # consecutive rate refusals: the retry delay doubles
        self.rate_refused = 0     # rate refusals naming no request (retried at the reply timeout)
        self.acked = self.failed = self.timed_out = 0

    def pending(self) -> bool:
        return any(r.pending for r in self.requests)

    def find(self, c: Classified) -> Request | None:
        if c.req_id is not None:
            for r in self.requests:
                if r.req_id == c.req_id:
                    return r
        for r in self.requests:
            if (c.channel, c.symbol) in r.pending or (c.channel, "*") in r.pending:
                return r
        return None

    def reply(self, c: Classified) -> None:
        """An ACK, ERROR or UNSUBSCRIBED frame from the venue."""
        if c.kind is Kind.UNSUBSCRIBED:
            return
        r = self.find(c)
        if c.kind is Kind.ACK:
            if r is not None:
                ch = r.channel if c.channel is None else c.channel
                key = (ch, c.symbol) if (ch, c.symbol) in r.pending else (ch, "*")
                r.pending.discard(key)
                self.subscriber.acked(r, c.sid, ch)
            if c.symbol is not None:
                self._acked_symbol(c.symbol)
            self.acked += 1
            self.retry_n = 0
            self._record("subscribed", channel=c.channel or (r.channel if r else None),
                         symbol=c.symbol, req_id=c.req_id)
        else:  # ERROR
            if self.subscriber.terminal(c.code):
                if r is not None:
                    r.pending.clear()
                self._lost(c, r)
                self.maybe_settled()
                return
            if r is not None and c.symbol is not None:
                ch = r.channel
                r.pending.discard((ch, c.symbol))
                self.failed += 1
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
                self.failed += len(syms)
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
                    self.rate_refused += 1
                self._record("venue_error", error=c.detail, code=c.code, req_id=c.req_id,
                             **({"rate_limited": True} if limited else {}))
            if c.code is not None and c.code == self.subscriber.auth_error_code:
                self._auth_error(None, c.code, c.detail or "")
        self.maybe_settled()

    def maybe_settled(self) -> None:
        if not self.pending():
            self._settled()

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
        delay = min(tm.subscribe_retry_cap, tm.subscribe_retry * (2 ** self.retry_n))
        self.retry_n += 1
        self.retries.append((time.monotonic() + delay, channel, symbols, kind))
        return round(delay, 3)

    def send_due_retries(self) -> None:
        """Send the rate-limit retries whose time has come (the connection
        calls this while subscribing or live)."""
        if not self.retries:
            return
        now = time.monotonic()
        due = [x for x in self.retries if x[0] <= now]
        if not due:
            return
        self.retries = [x for x in self.retries if x[0] > now]
        for _, channel, symbols, kind in due:
            self.subscribe_retries += 1
            if kind == "repair":
                self._repair_again(symbols)
            else:
                self.send(self.subscriber.resubscribe(channel, symbols), "rate_limit_retry")

    def _repair_again(self, symbols: list[str]) -> None:
        """Send a refused repair again (not charged to the symbol's bucket: it
        is the same repair, not a new one)."""
        for sym in symbols:
            action, payloads, reqs = self.subscriber.repair(sym, None)
            for channel, p in payloads:
                self._record("unsubscribe_sent", channel=channel, symbols=[sym], reason="repair_retry")
                self._send(p)
            if reqs:
                self.send(reqs, "repair_retry")

    def expire(self, now_ns: int) -> None:
        """Requests unanswered for ``subscribe_timeout``: recorded, given up."""
        limit = self.timing.subscribe_timeout * 1e9
        for r in self.requests:
            if r.pending and now_ns - r.sent_ns > limit:
                self.timed_out += len(r.pending)
                pending = sorted(s for _, s in r.pending)
                retry = None
                if self.rate_refused:   # a refusal that named no request: this one
                    self.rate_refused -= 1
                    syms = list(r.symbols) if "*" in pending else pending
                    retry = self._schedule_retry(r.channel, syms, None, None, True)
                self._record("subscribe_timeout", channel=r.channel, pending=pending,
                             req_id=r.req_id, **({"retry_in_s": retry} if retry is not None else {}))
                r.pending.clear()
                self.maybe_settled()

    def send(self, reqs: list[Request], reason: str) -> None:
        for r in reqs:
            r.sent_ns = time.time_ns()
            r.reason = reason
            self.requests.append(r)
            self._record("subscribe_sent", channel=r.channel, symbols=list(r.symbols),
                         req_id=r.req_id, reason=reason)
            self._send(r.payload)
        self._sent()

    def counts(self) -> dict[str, Any]:
        """What the ``live`` record reports."""
        return {"acked": self.acked, "failed": self.failed, "timed_out": self.timed_out}
