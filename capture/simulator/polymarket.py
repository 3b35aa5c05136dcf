"""Polymarket CLOB market channel (path ``/ws/market``), I/O-free.

The first client message subscribes (``{"assets_ids":[..],"type":"market",
"custom_feature_enabled":true}``) and is answered with a JSON *array* of
``book`` events, one per known asset (the initial dump); later
``{"assets_ids":[..],"operation":"subscribe"|"unsubscribe"}`` change the set
on the live connection (a subscribe gets a dump of its new books).  Text
``PING`` -> text ``PONG``.  Events: ``book``, ``price_change``,
``last_trade_price``, ``tick_size_change`` and, with custom features,
``best_bid_ask``.  Prices and sizes are decimal strings, timestamps ms
strings, ``market`` the 0x condition id, ``asset_id`` the long decimal token
id.  Only the first ``polymarket_max_assets`` tokens of a connection get
updates; the rest are accepted and then silently starved, like the venue.
"""
from __future__ import annotations

import orjson

from capture.simulator.session import Out, Session, dat, pad_json
from capture.simulator.universe import PolyMarket
from capture.simulator.values import rng, trimmed

INVALID = b"INVALID OPERATION"
#: The answer to a live subscribe whose tokens were all subscribed already
#: (reported from the live venue; a notice, not an error).
NO_NEW_ASSETS = b"NO NEW ASSETS"


class AssetBook:
    """One token's book: price ticks -> size in hundredths."""

    def __init__(self, market: PolyMarket, token: str, seed: int, custom: bool) -> None:
        self.m, self.token, self.custom = market, token, custom
        self.r = rng(seed, "polymarket", "book", token)
        self.dec = market.tick_decimals
        one = 10 ** self.dec
        mid = self.r.randint(one // 5, one * 4 // 5)
        self.bids = {mid - 1 - i: self._size() for i in range(min(15, mid - 1))}
        self.asks = {mid + 1 + i: self._size() for i in range(min(15, one - mid - 1))}

    def _size(self) -> int:
        return self.r.randint(100, 5_000_000)

    def _hash(self) -> str:
        return "%040x" % self.r.getrandbits(160)

    def _px(self, p: int) -> str:
        return trimmed(p, self.dec)

    def best(self) -> tuple[str, str]:
        return (self._px(max(self.bids)) if self.bids else "0",
                self._px(min(self.asks)) if self.asks else "1")

    def book(self, ts_ms: int) -> dict:
        # The venue lists bids ascending and asks descending (best last);
        # clients must not rely on the order.
        return {"market": self.m.condition_id, "asset_id": self.token,
                "timestamp": str(ts_ms), "hash": "0x" + self._hash(),
                "bids": [{"price": self._px(p), "size": trimmed(s, 2)}
                         for p, s in sorted(self.bids.items())],
                "asks": [{"price": self._px(p), "size": trimmed(s, 2)}
                         for p, s in sorted(self.asks.items(), reverse=True)],
                "event_type": "book"}

    def next_event(self, ts_ms: int) -> dict:
        r = self.r
        x = r.random()
        if x < 0.6:
            buy = r.random() < 0.5 or not self.asks
            side = self.bids if buy else self.asks
            if not side:
                return self.book(ts_ms)
            p = r.choice(list(side))
            if r.random() < 0.2 and len(side) > 1:
                del side[p]
                size = 0
            else:
                size = side[p] = self._size()
            bb, ba = self.best()
            return {"market": self.m.condition_id, "price_changes": [{
                "asset_id": self.token, "price": self._px(p), "size": trimmed(size, 2),
                "side": "BUY" if buy else "SELL", "hash": self._hash(),
                "best_bid": bb, "best_ask": ba}],
                "timestamp": str(ts_ms), "event_type": "price_change"}
        if x < 0.8:
            bb, _ = self.best()
            return {"asset_id": self.token, "event_type": "last_trade_price",
                    "fee_rate_bps": "0", "market": self.m.condition_id, "price": bb,
                    "side": r.choice(("BUY", "SELL")),
                    "size": trimmed(r.randint(100, 100_000), 2), "timestamp": str(ts_ms)}
        if x < 0.9 and self.custom:
            bb, ba = self.best()
            spread = trimmed(min(self.asks, default=10 ** self.dec) - max(self.bids, default=0),
                             self.dec)
            return {"event_type": "best_bid_ask", "market": self.m.condition_id,
                    "asset_id": self.token, "best_bid": bb, "best_ask": ba,
                    "spread": spread, "timestamp": str(ts_ms)}
        if x < 0.905:
            # Announced only: the digits of this book stay at its tick.
            old, new = trimmed(1, self.dec), trimmed(1, self.dec + 1)
            return {"event_type": "tick_size_change", "asset_id": self.token,
                    "market": self.m.condition_id, "old_tick_size": old,
                    "new_tick_size": new, "timestamp": str(ts_ms)}
        # A full snapshot again, as the venue sends after trades.
        return self.book(ts_ms)


class PolymarketSession(Session):
    venue = "polymarket"

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.started = False
        self.custom = False
        self.books: dict[str, AssetBook] = {}
        self.assets: list[str] = []      # subscription order; index >= max starves

    def _ms(self) -> int:
        return self.clock.tick() // 1_000_000

    def on_message(self, message: str | bytes) -> list[Out]:
        text = message if isinstance(message, str) else message.decode("utf-8", "replace")
        if text == "PING":
            return [Out(b"PONG", False)]
        req = self.parse(message)
        if not isinstance(req, dict) or not isinstance(req.get("assets_ids"), list):
            return [Out(INVALID, False)]
        ids = [a for a in req["assets_ids"] if isinstance(a, str)]
        op = req.get("operation")
        if op is None:
            if str(req.get("type", "")).lower() != "market":
                return [Out(INVALID, False)]
            self.custom = bool(req.get("custom_feature_enabled"))
            op = "subscribe"
        if op == "unsubscribe":
            for a in ids:
                if a in self.books:
                    del self.books[a]
                    self.assets.remove(a)
                    self.streams.pop(a, None)
            return []
        if op != "subscribe":
            return [Out(INVALID, False)]
        out: list[Out] = []
        if any(a in self.sc.error_symbols for a in ids):
            out.append(Out(INVALID, False))
        new: list[str] = []
        for a in ids:
            m = self.universe.poly_by_token.get(a)
            # Unknown token ids are accepted and simply never produce data.
            if m is None or a in self.books or a in self.sc.error_symbols:
                continue
            book = self.books[a] = AssetBook(m, a, self.sc.seed, self.custom)
            self.assets.append(a)
            new.append(a)
            if len(self.assets) <= self.sc.polymarket_max_assets:
                self.streams[a] = (lambda b=book: orjson.dumps(b.next_event(self._ms())))
        if new:
            self.subscribed_once = True
            live = [a for a in new if self.assets.index(a) < self.sc.polymarket_max_assets]
            first = not self.started
            self.started = True
            dump = [self.books[a].book(self._ms()) for a in live]
            if dump:
                target = self.sc.large_snapshot_size if first else 0
                out.append(dat(self._dump(dump, live, target)))
        elif ids and req.get("operation") == "subscribe" and not out:
            out.append(Out(NO_NEW_ASSETS, False))
        return out

    def _dump(self, dump: list[dict], assets: list[str], target: int) -> bytes:
        """The array of books, grown to ``target`` bytes by repeating fresh
        snapshots of the same assets (the venue's multi-MiB dumps are many
        books in one array)."""
        raw = orjson.dumps(dump)
        i = 0
        while len(raw) < target:
            chunk = [self.books[assets[(i + k) % len(assets)]].book(self._ms())
                     for k in range(64)]
            i += 64
            dump.extend(chunk)
            raw = orjson.dumps(dump)
        return raw

    def large(self, size: int) -> bytes:
        assets = [a for a in self.assets if a in self.streams] or []
        if not assets:
            m = self.universe.poly[0]
            self.books.setdefault(m.token_ids[0],
                                  AssetBook(m, m.token_ids[0], self.sc.seed, self.custom))
            assets = [m.token_ids[0]]
        return self._dump([self.books[assets[0]].book(self._ms())], assets, size)

    def blast_frame(self, i: int, size: int) -> bytes:
        m = self.universe.poly[0]
        msg = orjson.dumps({"market": m.condition_id, "price_changes": [{
            "asset_id": m.token_ids[0], "price": "0.5", "size": str(i + 1), "side": "BUY",
            "hash": "%040x" % i, "best_bid": "0.5", "best_ask": "0.51"}],
            "timestamp": str(self._ms()), "event_type": "price_change"})
        return pad_json(msg, size)
