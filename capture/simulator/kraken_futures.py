"""Kraken Futures WebSocket v1 (path ``/ws/v1``), I/O-free.

``{"event":"info","version":1}`` first; one ``subscribed`` ack per product;
``{"event":"error","message":"Invalid product id"}``; feeds ``ticker``,
``trade`` (``trade_snapshot`` first), ``book`` (``book_snapshot`` with ``seq``,
then one delta per level with the next ``seq``; qty absolute, 0 deletes) and
``heartbeat``.  Futures numbers are plain JSON numbers (floats), as sent by
the venue.  ``seq`` is per subscription; gaps can be injected.
"""
from __future__ import annotations

import uuid

import orjson

from capture.simulator.session import Out, Seq, Session, ctl, dat, pad_json
from capture.simulator.universe import FuturesProduct
from capture.simulator.values import rng

FEEDS = ("ticker", "ticker_lite", "trade", "book")


def _price(units: int, decimals: int) -> float:
    return round(units / 10 ** decimals, decimals)


class FBook:
    def __init__(self, prod: FuturesProduct, seed: int, gap_every: int, depth: int) -> None:
        self.p = prod
        self.r = rng(seed, "kraken_futures", "book", prod.symbol)
        self.seq = Seq(self.r.randint(10_000_000, 90_000_000), gap_every)
        mid = max(prod.mid, 4 * depth + 20)
        self.bids = {mid - 1 - 2 * i: self._qty() for i in range(depth)}
        self.asks = {mid + 1 + 2 * i: self._qty() for i in range(depth)}

    def _qty(self) -> float:
        return float(self.r.randint(1, 50000)) / 10

    def snapshot(self, ts_ms: int) -> bytes:
        d = self.p.price_decimals
        return orjson.dumps({
            "feed": "book_snapshot", "product_id": self.p.symbol, "timestamp": ts_ms,
            "seq": self.seq.next(), "tickSize": None,
            "bids": [{"price": _price(p, d), "qty": q} for p, q in sorted(self.bids.items(), reverse=True)],
            "asks": [{"price": _price(p, d), "qty": q} for p, q in sorted(self.asks.items())]})

    def delta(self, ts_ms: int) -> bytes:
        r = self.r
        buy = r.random() < 0.5
        side = self.bids if buy else self.asks
        p = r.choice(list(side))
        if r.random() < 0.2 and len(side) > 2:
            del side[p]
            qty = 0.0
        else:
            qty = side[p] = self._qty()
        return orjson.dumps({"feed": "book", "product_id": self.p.symbol,
                             "side": "buy" if buy else "sell", "seq": self.seq.next(),
                             "price": _price(p, self.p.price_decimals), "qty": qty,
                             "timestamp": ts_ms})


class FTrades:
    def __init__(self, prod: FuturesProduct, seed: int) -> None:
        self.p = prod
        self.r = rng(seed, "kraken_futures", "trade", prod.symbol)
        self.seq = self.r.randint(100_000, 900_000)
        self.price = max(prod.mid, 100)

    def one(self, ts_ms: int) -> dict:
        r = self.r
        self.seq += 1
        self.price = max(1, self.price + r.randint(-2, 2))
        return {"feed": "trade", "product_id": self.p.symbol,
                "uid": str(uuid.UUID(int=r.getrandbits(128), version=4)),
                "side": r.choice(("buy", "sell")), "type": "fill", "seq": self.seq,
                "time": ts_ms, "qty": float(r.randint(1, 20000)),
                "price": _price(self.price, self.p.price_decimals)}

    def snapshot(self, ts_ms: int, n: int = 10) -> bytes:
        return orjson.dumps({"feed": "trade_snapshot", "product_id": self.p.symbol,
                             "trades": [self.one(ts_ms) for _ in range(n)]})


class FTicker:
    def __init__(self, prod: FuturesProduct, seed: int) -> None:
        self.p = prod
        self.r = rng(seed, "kraken_futures", "ticker", prod.symbol)
        self.last = max(prod.mid, 100)

    def message(self, ts_ms: int) -> bytes:
        r, d = self.r, self.p.price_decimals
        self.last = max(3, self.last + r.randint(-2, 2))
        return orjson.dumps({
            "time": ts_ms, "feed": "ticker", "product_id": self.p.symbol,
            "bid": _price(self.last - 1, d), "ask": _price(self.last + 1, d),
            "bid_size": float(r.randint(1, 50000)), "ask_size": float(r.randint(1, 50000)),
            "volume": float(r.randint(10 ** 5, 10 ** 8)), "dtm": 0, "leverage": "50x",
            "index": _price(self.last, d), "premium": 0.1, "last": _price(self.last, d),
            "change": round(r.uniform(-5, 5), 6), "funding_rate": 3.891007752e-9,
            "funding_rate_prediction": 4.2233756e-9, "suspended": False, "tag": self.p.tag,
            "pair": self.p.pair, "openInterest": float(r.randint(1, 10 ** 6)),
            "markPrice": _price(self.last, d), "maturityTime": 0, "post_only": False,
            "volumeQuote": float(r.randint(10 ** 5, 10 ** 9))})


class FuturesSession(Session):
    venue = "kraken_futures"

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.heartbeat_on = False
        self.books: dict[str, FBook] = {}
        self.trades: dict[str, FTrades] = {}

    def on_open(self) -> list[Out]:
        return [ctl({"event": "info", "version": 1})]

    def heartbeat(self) -> bytes | None:
        if not self.heartbeat_on:
            return None
        return orjson.dumps({"feed": "heartbeat", "time": self.clock.now() // 1_000_000})

    def inject_gap(self, symbol: str | None = None) -> None:
        for sym, b in self.books.items():
            if symbol is None or sym == symbol:
                b.seq.gap_next = True

    def on_message(self, message: str | bytes) -> list[Out]:
        req = self.parse(message)
        if not isinstance(req, dict):
            return [ctl({"event": "error", "message": "Json Error"})]
        event, feed = req.get("event"), req.get("feed")
        if event not in ("subscribe", "unsubscribe"):
            return [ctl({"event": "error", "message": "Invalid request"})]
        if feed == "heartbeat":
            self.heartbeat_on = event == "subscribe"
            self.subscribed_once = True
            return [ctl({"event": event + "d", "feed": "heartbeat"})]
        if feed not in FEEDS:
            return [ctl({"event": "error", "message": "Invalid feed"})]
        products = req.get("product_ids")
        if not isinstance(products, list) or not products:
            return [ctl({"event": "error", "message": "Invalid product id"})]
        out: list[Out] = []
        for pid in products:
            prod = self.universe.futures_by_symbol.get(pid) if isinstance(pid, str) else None
            if prod is None or pid in self.sc.error_symbols:
                out.append(ctl({"event": "error", "message": "Invalid product id"}))
                continue
            key = (feed, pid)
            if event == "unsubscribe":
                self.streams.pop(key, None)
                out.append(ctl({"event": "unsubscribed", "feed": feed, "product_ids": [pid]}))
                continue
            out.append(ctl({"event": "subscribed", "feed": feed, "product_ids": [pid]}))
            self.subscribed_once = True
            out.extend(self._subscribe(feed, prod))
        return out

    def _subscribe(self, feed: str, prod: FuturesProduct) -> list[Out]:
        ms = lambda: self.clock.tick() // 1_000_000  # noqa: E731
        if feed == "book":
            # A (re)subscription starts a fresh book and a fresh seq run.
            b = self.books[prod.symbol] = FBook(prod, self.sc.seed, self.sc.gap_every,
                                                self.sc.book_depth)
            self.streams[(feed, prod.symbol)] = lambda: b.delta(ms())
            return [dat(b.snapshot(ms()))]
        if feed == "trade":
            t = self._trades(prod)
            self.streams[(feed, prod.symbol)] = lambda: orjson.dumps(t.one(ms()))
            return [dat(t.snapshot(ms()))]
        tk = FTicker(prod, self.sc.seed)
        self.streams[(feed, prod.symbol)] = lambda: tk.message(ms())
        return [dat(tk.message(ms()))]

    def _trades(self, prod: FuturesProduct) -> FTrades:
        if prod.symbol not in self.trades:
            self.trades[prod.symbol] = FTrades(prod, self.sc.seed)
        return self.trades[prod.symbol]

    def large(self, size: int) -> bytes:
        """A ``trade_snapshot`` big enough to reach ``size`` bytes."""
        sym = next(iter(self.streams))[1] if self.streams else "PF_XBTUSD"
        t = self._trades(self.universe.futures_by_symbol[sym])
        ms = self.clock.tick() // 1_000_000
        one = len(orjson.dumps(t.one(ms))) + 1
        return t.snapshot(ms, size // one + 1)

    def blast_frame(self, i: int, size: int) -> bytes:
        msg = orjson.dumps({"feed": "trade", "product_id": "PF_XBTUSD", "uid": f"blast-{i}",
                            "side": "buy", "type": "fill", "seq": i + 1,
                            "time": self.clock.tick() // 1_000_000, "qty": 1.0,
                            "price": 97000.0})
        return pad_json(msg, size)
