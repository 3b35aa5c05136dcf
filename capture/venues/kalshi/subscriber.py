"""Kalshi subscriptions: one subscribe per channel, acked once per channel
(``id``); later additions go through ``update_subscription`` on the
channel's ``sid``; handshake headers are signed afresh for every connection
attempt.  The ``orderbook_delta`` channel is subscribed with one
``subscribe`` per market, so that a gap can name its market *if* the venue
gives each its own sid.  Whether it does is not settled (observations
disagree), so the subscriber keeps the *set* of markets on each sid: when
several share one, a gap on that sid repairs every market of it (the lost
message could belong to any of them), and a terminal error on it
resubscribes them all."""
from __future__ import annotations

from typing import Any

from capture.venues.subscribe import Request, Subscriber


class KalshiSubscriber(Subscriber):
    #: Channels subscribed with one command per market (``seq`` is per sid).
    PER_MARKET = frozenset({"orderbook_delta"})

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        # the venue's codes (traits of the protocol class, which imports this module)
        self.rate_limit_codes = self.venue_cls.too_many_requests_codes
        self.terminal_codes = self.venue_cls.terminal_error_codes
        self._reset()

    def _reset(self) -> None:
        self.sids: dict[str, int] = {}              # shared channel -> sid
        self.market_sids: dict[str, int] = {}       # book market -> its sid
        self.sid_markets: dict[int, set[str]] = {}  # book sid -> its markets (one or several)
        self.sid_channel: dict[int, str] = {}

    def fresh(self) -> None:
        super().fresh()
        self._reset()

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
        return code is not None and code in self.terminal_codes

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

