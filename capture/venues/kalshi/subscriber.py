"""Kalshi subscriptions: one subscribe per channel, acked once per channel
(``id``); later additions go through ``update_subscription`` on the
channel's ``sid``; handshake headers are signed afresh for every connection
attempt.  The ``orderbook_delta`` channel is subscribed one market per
``sid``: Kalshi numbers ``seq`` per sid, so only then does a gap name the
market whose book needs a ``get_snapshot`` (with several markets on one sid
the lost message could belong to any of them)."""
from __future__ import annotations

from typing import Any

from capture.venues.subscribe import Request, Subscriber


class KalshiSubscriber(Subscriber):
    #: Channels subscribed one market per sid (``seq`` is per sid).
    PER_MARKET = frozenset({"orderbook_delta"})

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.sids: dict[str, int] = {}
        self.market_sids: dict[str, int] = {}
        self.sid_markets: dict[int, str] = {}

    def fresh(self) -> None:
        super().fresh()
        self.sids = {}
        self.market_sids = {}
        self.sid_markets = {}

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
