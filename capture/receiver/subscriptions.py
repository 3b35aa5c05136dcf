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
  ``orderbook_delta`` channel is subscribed with one ``subscribe`` per market,
  so that a gap can name its market *if* the venue gives each its own sid.
  Whether it does is not settled (observations disagree), so the subscriber
  keeps the *set* of markets on each sid: when several share one, a gap on
  that sid repairs every market of it (the lost message could belong to any
  of them), and a terminal error on it resubscribes them all.

Integrity repairs (see :mod:`capture.receiver.repair`): :meth:`Subscriber.repair`
builds what re-syncs one instrument's book on the live connection
(Kalshi ``get_snapshot``, Kraken spot / Futures unsubscribe + subscribe).

No I/O here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from capture.venues.kalshi.protocol import AUTH_ERROR_CODE, TERMINAL_ERROR_CODES, TOO_MANY_REQUESTS_CODES
from capture.venues.kraken.protocol import KrakenSpot


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

    def repair(self, symbol: str, stream_key: object = None) -> tuple[str, list[bytes], list[Request]]:
        """``(action, plain payloads, requests)`` that re-sync ``symbol``'s book
        on the live connection; action "" when the venue has no such repair."""
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


class KrakenSubscriber(Subscriber):
    rate_limit_errors = KrakenSpot.rate_limit_errors

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

    def __init__(self, venue_cls: type, options: dict[str, Any]) -> None:
        self.max_tokens = int(options.get("max_tokens") or venue_cls.per_connection)
        super().__init__(venue_cls, options)
        self.builder = venue_cls(self.max_tokens)
        self.started = False

    def fresh(self) -> None:
        self.builder = self.venue_cls(self.max_tokens)
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
    #: Channels subscribed with one command per market (``seq`` is per sid).
    PER_MARKET = frozenset({"orderbook_delta"})
    auth_error_code = AUTH_ERROR_CODE
    rate_limit_codes = TOO_MANY_REQUESTS_CODES

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self._reset()

    def _reset(self) -> None:
        self.sids: dict[str, int] = {}              # shared channel -> sid
        self.market_sids: dict[str, int] = {}       # book market -> its sid
        self.sid_markets: dict[int, set[str]] = {}  # book sid -> its markets (one or several)
        self.sid_channel: dict[int, str] = {}

    def fresh(self) -> None:
        super().fresh()
        self._reset()

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
        gone: dict[int, list[str]] = {}
        for m in members:
            sid = self.market_sids.pop(m, None)
            if sid is not None:
                gone.setdefault(sid, []).append(m)
        whole = []
        for sid, ms in gone.items():
            left = self.sid_markets.get(sid, set()) - set(ms)
            if left:   # a shared sid keeps its other markets
                self.sid_markets[sid] = left
                out.append(("orderbook_delta", ms,
                            self.builder.update_subscription(sid, "delete_markets", ms)))
            else:
                self.sid_markets.pop(sid, None)
                self.sid_channel.pop(sid, None)
                whole.append(sid)
        if whole:
            out.append(("orderbook_delta", members, self.builder.unsubscribe(whole)))
        return out

    def acked(self, r: Request | None, sid: int | None, channel: str | None) -> None:
        if r is None or sid is None or not channel:
            return
        self.sid_channel[sid] = channel
        if channel in self.PER_MARKET and len(r.symbols) == 1:
            m = r.symbols[0]
            self.market_sids[m] = sid
            self.sid_markets.setdefault(sid, set()).add(m)
        else:
            self.sids[channel] = sid

    def repair(self, symbol: str, stream_key: object = None):
        """``get_snapshot`` for every market of the sid: with one market per
        sid that is the market itself; with a shared sid the lost message may
        have belonged to any of them."""
        sid = stream_key if isinstance(stream_key, int) and stream_key in self.sid_markets \
            else self.market_sids.get(symbol)
        if sid is None:
            return "", [], []
        markets = sorted(self.sid_markets.get(sid) or {symbol})
        cid = self.builder.next_id()
        req = Request(self.builder.update_subscription(sid, "get_snapshot", markets, cmd_id=cid),
                      "orderbook_delta", tuple(markets), cid, {("orderbook_delta", "*")})
        return "get_snapshot", [], [req]

    def symbol_of(self, stream_key: object) -> str | None:
        ms = self.sid_markets.get(stream_key) if isinstance(stream_key, int) else None
        return min(ms) if ms else None

    def markets_of(self, stream_key: object) -> list[str]:
        ms = self.sid_markets.get(stream_key) if isinstance(stream_key, int) else None
        return sorted(ms) if ms else []

    def terminal(self, code: int | None) -> bool:
        return code is not None and code in TERMINAL_ERROR_CODES

    def lost(self, sid: int | None, r: Request | None
             ) -> tuple[str | None, list[str] | None, list[bytes]]:
        """The venue ended subscription ``sid`` (or, naming none, the request
        ``r``): forget it; its markets are to be subscribed afresh.  With
        neither, the error cannot say which book sid ended: every book sid is
        unsubscribed (an already-ended one answers "unknown subscription ID")
        and every book market subscribed again, so none is left stale."""
        if sid is None and r is not None:
            return r.channel, list(r.symbols), []
        if sid is None:
            markets = sorted(self.market_sids)
            sids = sorted(self.sid_markets)
            self.market_sids.clear()
            self.sid_markets.clear()
            for s in sids:
                self.sid_channel.pop(s, None)
            return "orderbook_delta", markets, [self.builder.unsubscribe(sids)] if sids else []
        channel = self.sid_channel.pop(sid, None)
        markets = sorted(self.sid_markets.pop(sid, set()))
        for m in markets:
            self.market_sids.pop(m, None)
        if channel is not None and self.sids.get(channel) == sid:
            del self.sids[channel]    # the next subscribe opens a new sid
            return channel, None, []  # every member of the connection
        return channel or "orderbook_delta", markets, []

    def headers(self) -> dict[str, str] | None:
        signer = self.options.get("signer")
        return signer.headers() if signer is not None else None


SUBSCRIBERS: dict[str, type[Subscriber]] = {
    "kraken": KrakenSubscriber, "polymarket": PolymarketSubscriber,
    "kraken_futures": FuturesSubscriber, "kalshi": KalshiSubscriber,
}
