"""What a connection sends to its venue, and which replies it awaits: the
interface every venue's ``subscriber`` module implements.

A :class:`Subscriber` (one per connection, built from the venue's
``subscriber`` trait) turns "these instruments on this connection" into the
venue's requests (one per channel, chunked), each with the set of
``(channel, instrument)`` acks it awaits, so the receiver's connection can
match acks and errors generically.  Integrity repairs: :meth:`Subscriber.repair`
builds what re-syncs one instrument's book on the live connection.

The venue specifics (ack shapes, chunking, sids, signing) live in
``capture/venues/<venue>/subscriber.py``.  No I/O here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    """One subscribe request and the (channel, instrument) acks it awaits."""

    payload: bytes
    channel: str | None
    symbols: tuple[str, ...]
    req_id: int | None
    pending: set[tuple[str | None, str]] = field(default_factory=set)
    sent_ns: int = 0
    reason: str = ""    # why it was sent ("connect", "repair", ...)


def chunks(items: list[str], n: int) -> list[list[str]]:
    return [items[i:i + n] for i in range(0, len(items), n)] if items else []


class Subscriber:
    """Builds a venue's subscribe/unsubscribe/ping messages for one connection.

    ``acks``: the venue acknowledges subscriptions (Polymarket does not).
    ``live_add``: instruments can be added to a live connection.
    """

    acks = True
    live_add = True
    chunk = 250

    def __init__(self, venue_cls: type, options: dict[str, Any]) -> None:
        self.venue_cls = venue_cls
        self.options = options
        self.builder = venue_cls()
        self.auth_error_code: int | None = getattr(venue_cls, "auth_error_code", None)

    def fresh(self) -> None:
        """A new connection: request ids restart."""
        self.builder = self.venue_cls()

    def subscribe(self, members: list[str]) -> list[Request]:
        raise NotImplementedError

    def unsubscribe(self, members: list[str]) -> list[tuple[str | None, list[str], bytes]]:
        raise NotImplementedError

    def channels(self) -> tuple[str, ...]:
        """The configured channels, else the venue's ``default_channels``."""
        return tuple(self.options.get("channels") or self.venue_cls.default_channels)

    def app_ping(self) -> bytes | None:
        return None

    def headers(self) -> dict[str, str] | None:
        return None

    #: Error details meaning "too many requests, try again later" (the venue
    #: refused the subscribe for its rate, not for the instrument).
    rate_limit_errors: tuple[str, ...] = ()

    def rate_limited(self, detail: str | None) -> bool:
        return detail is not None and any(e in detail for e in self.rate_limit_errors)

    #: Error details meaning "this subscription exists already": after a
    #: repair's resubscribe, the repair's unsubscribe was not carried out.
    already_errors: tuple[str, ...] = ("Already subscribed",)

    def already(self, detail: str | None) -> bool:
        return detail is not None and any(e in detail for e in self.already_errors)

    def resubscribe(self, channel: str | None, symbols: list[str]) -> list[Request]:
        """Requests for these instruments on this channel only (a retry)."""
        return [r for r in self.subscribe(symbols) if r.channel == channel]

    def acked(self, r: Request | None, sid: int | None, channel: str | None) -> None:
        """An ack matched request ``r`` (Kalshi keeps the sids)."""

    def repair(self, symbol: str, stream_key: object = None
               ) -> tuple[str, list[tuple[str, bytes]], list[Request]]:
        """``(action, [(channel, unsubscribe payload)], requests)`` that
        re-sync ``symbol``'s book on the live connection; action "" when the
        venue has no such repair."""
        return "", [], []

    def symbol_of(self, stream_key: object) -> str | None:
        """The instrument a sequence stream belongs to, if known."""
        return None

    def markets_of(self, stream_key: object) -> list[str]:
        """Every instrument numbered by this sequence stream (Kalshi: a sid
        may carry several markets)."""
        s = self.symbol_of(stream_key)
        return [] if s is None else [s]

    #: Venue error codes meaning "too many requests" (Kalshi: 27).
    rate_limit_codes: frozenset[int] = frozenset()

    def rate_limited_code(self, code: int | None) -> bool:
        return code is not None and code in self.rate_limit_codes

    def terminal(self, code: int | None) -> bool:
        """The venue error ``code`` ended a subscription (messages were lost)."""
        return False

    def lost(self, sid: int | None, r: Request | None
             ) -> tuple[str | None, list[str] | None, list[bytes]]:
        """Forget a subscription the venue ended: ``(channel, instruments to
        subscribe again (None: every member of the connection), payloads to
        send before that)``."""
        return None, [], []
