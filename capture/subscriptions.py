"""What a connection sends to its venue, and which replies it awaits.

The venue modules (:mod:`capture.venues`) build single messages; a
:class:`Subscriber` turns "these instruments on this connection" into the
venue's requests (one per channel, chunked), each with the set of
``(channel, instrument)`` acks it awaits, so :mod:`capture.connection` can
match acks and errors generically:

* Kraken spot: one subscribe per channel with all symbols; one ack per symbol,
  echoing ``req_id``; errors carry the symbol or at least the ``req_id``.
* Polymarket: the initial ``{"assets_ids":..,"type":"market"}`` then
  ``operation: subscribe``; no acks at all (live right after sending).
* Kraken Futures: one subscribe per feed; one ``subscribed`` per product.
* Kalshi: one subscribe per channel, acked once per channel (``id``); later
  additions go through ``update_subscription`` on the channel's ``sid``;
  handshake headers are signed afresh for every connection attempt.

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

    def app_ping(self) -> bytes | None:
        return None

    def headers(self) -> dict[str, str] | None:
        return None


class KrakenSubscriber(Subscriber):
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


class KalshiSubscriber(Subscriber):
    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.sids: dict[str, int] = {}

    def fresh(self) -> None:
        super().fresh()
        self.sids = {}

    def channels(self) -> tuple[str, ...]:
        return tuple(self.options.get("channels") or ("orderbook_delta", "trade", "ticker"))

    def subscribe(self, members: list[str]) -> list[Request]:
        out = []
        for ch in self.channels():
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
        return [(ch, members, self.builder.update_subscription(sid, "delete_markets", members))
                for ch, sid in self.sids.items()]

    def headers(self) -> dict[str, str] | None:
        signer = self.options.get("signer")
        return signer.headers() if signer is not None else None


SUBSCRIBERS: dict[str, type[Subscriber]] = {
    "kraken": KrakenSubscriber, "polymarket": PolymarketSubscriber,
    "kraken_futures": FuturesSubscriber, "kalshi": KalshiSubscriber,
}
