"""What a connection sends to its venue, and which replies it awaits.

The venue modules (:mod:`capture.venues`) build single messages; a
:class:`Subscriber` turns "these instruments on this connection" into the
venue's requests (one per channel, chunked), each with the set of
``(channel, instrument)`` acks it awaits, so :mod:`capture.receiver.connection` can
match acks and errors generically:

* Kraken spot: one subscribe per channel with all symbols; one ack per symbol,
  echoing ``req_id``; errors carry the symbol or at least the ``req_id``.
* Polymarket: the initial ``{"assets_ids":..,"type":"market"}`` then
  ``operation: subscribe``; no acks at all (live right after sending).
* Kraken Futures: one subscribe per feed; one ``subscribed`` per product.
* Kalshi: one subscribe per channel, acked once per channel (``id``); later
  additions go through ``update_subscription`` on the channel's ``sid``;
  handshake headers are signed afresh for every connection attempt.  The
  ``orderbook_delta`` channel is subscribed one market per ``sid``: Kalshi
  numbers ``seq`` per sid, so only then does a gap name the market whose book
  needs a ``get_snapshot`` (with several markets on one sid the lost message
  could belong to any of them).

Integrity repairs (see :mod:`capture.receiver.repair`): :meth:`Subscriber.repair`
builds what re-syncs one instrument's book on the live connection
(Kalshi ``get_snapshot``, Kraken spot / Futures unsubscribe + subscribe).

No I/O here.
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


def _chunks(items: list[str], n: int) -> list[list[str]]:
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

    def fresh(self) -> None:
        """A new connection: request ids restart."""
        self.builder = self.venue_cls()

    def subscribe(self, members: list[str]) -> list[Request]:
        raise NotImplementedError

    def unsubscribe(self, members: list[str]) -> list[tuple[str | None, list[str], bytes]]:
        raise NotImplementedError

    #: The venue's error code for an authentication failure (Kalshi: 9).
    auth_error_code: int | None = None

    def app_ping(self) -> bytes | None:
        return None

    def headers(self) -> dict[str, str] | None:
        return None

    #: Error details meaning "too many requests, try again later" (the venue
    #: refused the subscribe for its rate, not for the instrument).
    rate_limit_errors: tuple[str, ...] = ()

    def rate_limited(self, detail: str | None) -> bool:
        return detail is not None and any(e in detail for e in self.rate_limit_errors)

    def resubscribe(self, channel: str | None, symbols: list[str]) -> list[Request]:
        """Requests for these instruments on this channel only (a retry)."""
        return [r for r in self.subscribe(symbols) if r.channel == channel]

    def acked(self, r: Request | None, sid: int | None, channel: str | None) -> None:
        """An ack matched request ``r`` (Kalshi keeps the sids)."""

    def repair(self, symbol: str, stream_key: object = None) -> tuple[str, list[bytes], list[Request]]:
        """``(action, plain payloads, requests)`` that re-sync ``symbol``'s book
        on the live connection; action "" when the venue has no such repair."""
        return "", [], []

    def symbol_of(self, stream_key: object) -> str | None:
        """The instrument a sequence stream belongs to, if known."""
        return None


class KrakenSubscriber(Subscriber):
    rate_limit_errors = ("Exceeded msg rate",)

    def channels(self) -> tuple[str, ...]:
        return tuple(self.options.get("channels") or ("trade", "ticker", "book"))

    def subscribe(self, members: list[str]) -> list[Request]:
        depth = int(self.options.get("depth", 10))
        out = []
        for ch in self.channels():
            for syms in _chunks(members, self.chunk):
                rid = self.builder.next_req_id()
                out.append(Request(self.builder.subscribe(ch, syms, depth=depth, req_id=rid),
                                   ch, tuple(syms), rid, {(ch, s) for s in syms}))
        return out

    def unsubscribe(self, members: list[str]):
        depth = int(self.options.get("depth", 10))
        return [(ch, syms, self.builder.unsubscribe(ch, syms, depth=depth if ch == "book" else None))
                for ch in self.channels() for syms in _chunks(members, self.chunk)]

    def app_ping(self) -> bytes:
        return self.builder.ping()

    def repair(self, symbol: str, stream_key: object = None):
        if "book" not in self.channels():
            return "", [], []
        depth = int(self.options.get("depth", 10))
        unsub = self.builder.unsubscribe("book", [symbol], depth=depth)
        rid = self.builder.next_req_id()
        req = Request(self.builder.subscribe("book", [symbol], depth=depth, snapshot=True, req_id=rid),
                      "book", (symbol,), rid, {("book", symbol)})
        return "resubscribe", [unsub], [req]


class PolymarketSubscriber(Subscriber):
    acks = False

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.started = False

    def fresh(self) -> None:
        super().fresh()
        self.started = False

    def subscribe(self, members: list[str]) -> list[Request]:
        out = []
        for ids in _chunks(members, self.builder.max_tokens):
            if not self.started:
                self.started = True
                payload = self.builder.initial(ids, bool(self.options.get("custom_features", True)))
            else:
                payload = self.builder.subscribe(ids)
            out.append(Request(payload, "market", tuple(ids), None))
        return out

    def unsubscribe(self, members: list[str]):
        return [("market", ids, self.builder.unsubscribe(ids))
                for ids in _chunks(members, self.builder.max_tokens)]

    def app_ping(self) -> bytes:
        return self.builder.ping()


class FuturesSubscriber(Subscriber):
    def channels(self) -> tuple[str, ...]:
        return tuple(self.options.get("channels") or ("book", "trade", "ticker"))

    def subscribe(self, members: list[str]) -> list[Request]:
        return [Request(self.builder.subscribe(f, pids), f, tuple(pids), None,
                        {(f, p) for p in pids})
                for f in self.channels() for pids in _chunks(members, self.chunk)]

    def unsubscribe(self, members: list[str]):
        return [(f, pids, self.builder.unsubscribe(f, pids))
                for f in self.channels() for pids in _chunks(members, self.chunk)]

    def repair(self, symbol: str, stream_key: object = None):
        if "book" not in self.channels():
            return "", [], []
        req = Request(self.builder.subscribe("book", [symbol]), "book", (symbol,), None,
                      {("book", symbol)})
        return "resubscribe", [self.builder.unsubscribe("book", [symbol])], [req]

    def symbol_of(self, stream_key: object) -> str | None:
        if isinstance(stream_key, tuple) and len(stream_key) == 2:
            return stream_key[1]
        return None


class KalshiSubscriber(Subscriber):
    #: Channels subscribed one market per sid (``seq`` is per sid).
    PER_MARKET = frozenset({"orderbook_delta"})

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        from capture.venues.kalshi.protocol import AUTH_ERROR_CODE
        self.auth_error_code = AUTH_ERROR_CODE
        self.sids: dict[str, int] = {}
        self.market_sids: dict[str, int] = {}
        self.sid_markets: dict[int, str] = {}

    def fresh(self) -> None:
        super().fresh()
        self.sids = {}
        self.market_sids = {}
        self.sid_markets = {}

    def channels(self) -> tuple[str, ...]:
        return tuple(self.options.get("channels") or ("orderbook_delta", "trade", "ticker"))

    def subscribe(self, members: list[str]) -> list[Request]:
        out = []
        for ch in self.channels():
            if ch in self.PER_MARKET:
                for m in members:
                    cid = self.builder.next_id()
                    out.append(Request(self.builder.subscribe(ch, [m], cmd_id=cid), ch, (m,),
                                       cid, {(ch, "*")}))
                continue
            sid = self.sids.get(ch)
            cid = self.builder.next_id()
            if sid is None:
                out.append(Request(self.builder.subscribe(ch, members, cmd_id=cid), ch,
                                   tuple(members), cid, {(ch, "*")}))
            else:
                out.append(Request(self.builder.update_subscription(sid, "add_markets", members,
                                                                    cmd_id=cid),
                                   ch, tuple(members), cid))
        return out

    def unsubscribe(self, members: list[str]):
        out = [(ch, members, self.builder.update_subscription(sid, "delete_markets", members))
               for ch, sid in self.sids.items()]
        sids = [self.market_sids.pop(m) for m in members if m in self.market_sids]
        for sid in sids:
            self.sid_markets.pop(sid, None)
        if sids:
            out.append(("orderbook_delta", members, self.builder.unsubscribe(sids)))
        return out

    def acked(self, r: Request | None, sid: int | None, channel: str | None) -> None:
        if r is None or sid is None or not channel:
            return
        if channel in self.PER_MARKET and len(r.symbols) == 1:
            self.market_sids[r.symbols[0]] = sid
            self.sid_markets[sid] = r.symbols[0]
        else:
            self.sids[channel] = sid

    def repair(self, symbol: str, stream_key: object = None):
        sid = self.market_sids.get(symbol)
        if sid is None and isinstance(stream_key, int) and self.sid_markets.get(stream_key) == symbol:
            sid = stream_key
        if sid is None:
            return "", [], []
        cid = self.builder.next_id()
        req = Request(self.builder.update_subscription(sid, "get_snapshot", [symbol], cmd_id=cid),
                      "orderbook_delta", (symbol,), cid, {("orderbook_delta", "*")})
        return "get_snapshot", [], [req]

    def symbol_of(self, stream_key: object) -> str | None:
        return self.sid_markets.get(stream_key) if isinstance(stream_key, int) else None

    def headers(self) -> dict[str, str] | None:
        signer = self.options.get("signer")
        return signer.headers() if signer is not None else None


SUBSCRIBERS: dict[str, type[Subscriber]] = {
    "kraken": KrakenSubscriber, "polymarket": PolymarketSubscriber,
    "kraken_futures": FuturesSubscriber, "kalshi": KalshiSubscriber,
}
