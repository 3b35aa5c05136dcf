"""Kraken spot WebSocket v2 (path ``/v2``), I/O-free.

Faithful points: a ``status`` frame on connect; one ack per symbol carrying
``req_id``, ``time_in``, ``time_out``; errors as ``success:false`` with the
venue's text ("Currency pair not supported XYZ/USD", "Already subscribed",
"Exceeded msg rate"); ``ping`` -> ``pong``; decimals as JSON number literals
carrying the pair's fixed precision (``0.10000000``); a book checksum over
exactly those digits.  The checksum is implemented here on purpose, apart
from the receiver's validator, so the two cross-check each other.
"""
from __future__ import annotations

import zlib

import orjson

from capture.simulator.session import Out, Session, ctl, dat, pad_json
from capture.simulator.universe import KrakenPair
from capture.simulator.values import fixed, raw, rfc3339, rng, wall_rfc3339

CHANNELS = ("ticker", "trade", "book")  # plus "instrument", answered apart
DEPTHS = (10, 25, 100, 500, 1000)


def checksum_digits(price: str, qty: str) -> str:
    """One level's checksum text: '.' removed, leading zeros stripped."""
    return price.replace(".", "").lstrip("0") + qty.replace(".", "").lstrip("0")


def book_checksum(asks: list[tuple[str, str]], bids: list[tuple[str, str]]) -> int:
    """CRC32 of the top 10 asks (low->high) then top 10 bids (high->low).

    ``asks``/``bids`` are (price, qty) decimal strings exactly as sent, in
    book order (asks ascending, bids descending).
    """
    text = "".join(checksum_digits(p, q) for p, q in asks[:10])
    text += "".join(checksum_digits(p, q) for p, q in bids[:10])
    return zlib.crc32(text.encode())


class _Num:
    """Formats a pair's decimals as the venue does (number literal) or as strings."""

    def __init__(self, as_strings: bool) -> None:
        self.as_strings = as_strings

    def __call__(self, units: int, decimals: int) -> object:
        s = fixed(units, decimals)
        return s if self.as_strings else raw(s)


class Book:
    """One symbol's book, kept at exactly ``depth`` levels per side.

    Prices and quantities are integer units; the wire digits come from
    :func:`fixed`.  Updates modify a level, delete one (and bring the next
    level into scope in the same message, as Kraken does) or insert one near
    the top (the level pushed out of scope is *not* announced: clients
    truncate to their depth, as with the real feed).
    """

    def __init__(self, pair: KrakenPair, depth: int, seed: int, num: _Num,
                 corrupt_every: int) -> None:
        self.pair, self.depth, self.num = pair, depth, num
        self.r = rng(seed, "kraken", "book", pair.symbol)
        self.corrupt_every = corrupt_every
        self.sent = 0
        self.corrupt_next = False
        mid = max(pair.mid, 4 * depth + 20)
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        p = mid - 1
        for _ in range(depth):
            self.bids[p] = self._qty()
            p -= self.r.randint(1, 3)
        p = mid + 1
        for _ in range(depth):
            self.asks[p] = self._qty()
            p += self.r.randint(1, 3)

    def _qty(self) -> int:
        return self.r.randint(10 ** (self.pair.qty_decimals - 3), 50 * 10 ** self.pair.qty_decimals)

    def _fmt(self, side: dict[int, int], desc: bool) -> list[tuple[str, str]]:
        pd, qd = self.pair.price_decimals, self.pair.qty_decimals
        return [(fixed(p, pd), fixed(side[p], qd)) for p in sorted(side, reverse=desc)]

    def _levels(self, levels: list[tuple[int, int]]) -> list[dict]:
        pd, qd = self.pair.price_decimals, self.pair.qty_decimals
        return [{"price": self.num(p, pd), "qty": self.num(q, qd)} for p, q in levels]

    def checksum(self) -> int:
        c = book_checksum(self._fmt(self.asks, False), self._fmt(self.bids, True))
        self.sent += 1
        if self.corrupt_next or (self.corrupt_every and self.sent % self.corrupt_every == 0):
            self.corrupt_next = False
            c ^= 0x5A5A5A5A  # any other value; never equal to the true one
        return c

    def snapshot(self) -> bytes:
        bids = sorted(self.bids.items(), reverse=True)
        asks = sorted(self.asks.items())
        return orjson.dumps({"channel": "book", "type": "snapshot", "data": [{
            "symbol": self.pair.symbol, "bids": self._levels(bids),
            "asks": self._levels(asks), "checksum": self.checksum()}]})

    def update(self, ts_ns: int) -> bytes:
        r = self.r
        is_bid = r.random() < 0.5
        side = self.bids if is_bid else self.asks
        changes: list[tuple[int, int]] = []
        action = r.random()
        if action < 0.6:
            p = r.choice(sorted(side, reverse=is_bid)[: min(10, len(side))])
            side[p] = self._qty()
            changes.append((p, side[p]))
        elif action < 0.8 or len(side) < 2:
            # Delete a level, and bring the next one into scope beyond the worst.
            p = r.choice(list(side))
            del side[p]
            changes.append((p, 0))
            worst = min(side) if is_bid else max(side)
            newp = worst - r.randint(1, 3) if is_bid else worst + r.randint(1, 3)
            if newp > 0:
                side[newp] = self._qty()
                changes.append((newp, side[newp]))
        else:
            # Insert inside the best 3 levels, never crossing the other side.
            best = max(side) if is_bid else min(side)
            other = min(self.asks) if is_bid else max(self.bids)
            newp = best + r.randint(-3, 1) if is_bid else best - r.randint(-1, 3)
            if newp in side or newp <= 0 or (is_bid and newp >= other) or (
                    not is_bid and newp <= other):
                newp = r.choice(list(side))
            side[newp] = self._qty()
            changes.append((newp, side[newp]))
            while len(side) > self.depth:  # out of scope: silently truncated
                del side[min(side) if is_bid else max(side)]
        levels = self._levels(changes)
        return orjson.dumps({"channel": "book", "type": "update", "data": [{
            "symbol": self.pair.symbol,
            "bids": levels if is_bid else [], "asks": [] if is_bid else levels,
            "checksum": self.checksum(), "timestamp": rfc3339(ts_ns)}]})


class Trades:
    """Sequential ``trade_id`` per symbol; a random walk around the mid."""

    def __init__(self, pair: KrakenPair, seed: int, num: _Num) -> None:
        self.pair, self.num = pair, num
        self.r = rng(seed, "kraken", "trade", pair.symbol)
        self.next_id = self.r.randint(1_000_000, 9_000_000)
        self.price = max(pair.mid, 100)

    def one(self, ts_ns: int) -> dict:
        r, pd, qd = self.r, self.pair.price_decimals, self.pair.qty_decimals
        self.price = max(1, self.price + r.randint(-3, 3))
        t = {"symbol": self.pair.symbol, "side": r.choice(("buy", "sell")),
             "price": self.num(self.price, pd),
             "qty": self.num(r.randint(10 ** (qd - 4), 5 * 10 ** qd), qd),
             "ord_type": r.choice(("limit", "market")), "trade_id": self.next_id,
             "timestamp": rfc3339(ts_ns)}
        self.next_id += 1
        return t

    def message(self, kind: str, n: int, ts_ns: int) -> bytes:
        return orjson.dumps({"channel": "trade", "type": kind,
                             "data": [self.one(ts_ns) for _ in range(n)]})


class Ticker:
    def __init__(self, pair: KrakenPair, seed: int, num: _Num) -> None:
        self.pair, self.num = pair, num
        self.r = rng(seed, "kraken", "ticker", pair.symbol)
        self.last = max(pair.mid, 100)
        self.open = self.last

    def message(self, kind: str, ts_ns: int) -> bytes:
        r, pd, qd, n = self.r, self.pair.price_decimals, self.pair.qty_decimals, self.num
        self.last = max(2, self.last + r.randint(-2, 2))
        change = self.last - self.open
        return orjson.dumps({"channel": "ticker", "type": kind, "data": [{
            "symbol": self.pair.symbol,
            "bid": n(self.last - 1, pd), "bid_qty": n(r.randint(1, 10 ** (qd + 1)), qd),
            "ask": n(self.last + 1, pd), "ask_qty": n(r.randint(1, 10 ** (qd + 1)), qd),
            "last": n(self.last, pd), "volume": n(r.randint(10 ** qd, 10 ** (qd + 5)), qd),
            "vwap": n(self.last, pd), "low": n(min(self.last, self.open) - 5, pd),
            "high": n(max(self.last, self.open) + 5, pd), "change": n(change, pd),
            "change_pct": n(change * 10000 // self.open, 2), "timestamp": rfc3339(ts_ns)}]})


class KrakenSession(Session):
    venue = "kraken"
    idle_heartbeat = True

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.num = _Num(self.sc.kraken_decimal_strings)
        self.books: dict[str, Book] = {}
        self.trades: dict[str, Trades] = {}

    def on_open(self) -> list[Out]:
        return [ctl({"channel": "status", "type": "update", "data": [{
            "version": "2.0.10", "system": "online", "api_version": "v2",
            "connection_id": 8_000_000_000_000_000_000 + self.index}]})]

    def heartbeat(self) -> bytes:
        return b'{"channel":"heartbeat"}'

    def on_message(self, message: str | bytes) -> list[Out]:
        time_in = wall_rfc3339()
        req = self.parse(message)
        if not isinstance(req, dict):
            return [ctl({"error": "Malformed request", "success": False,
                         "time_in": time_in, "time_out": wall_rfc3339()})]
        method = req.get("method")
        base = {"method": method}
        if "req_id" in req:
            base["req_id"] = req["req_id"]

        def err(text: str, **extra: object) -> Out:
            return ctl({"error": text, **base, "success": False, **extra,
                        "time_in": time_in, "time_out": wall_rfc3339()})

        if method == "ping":
            return [ctl({"method": "pong", **({"req_id": req["req_id"]} if "req_id" in req else {}),
                         "time_in": time_in, "time_out": wall_rfc3339()})]
        if method not in ("subscribe", "unsubscribe"):
            return [err(f"Method not found {method}" if method else "Method field missing")]
        if not self._rate_ok():
            if self.sc.kraken_bare_rate_limit:   # the bare form: no method, no req_id
                return [ctl({"Error": "Exceeded msg rate"})]
            return [err("Exceeded msg rate")]
        params = req.get("params")
        if not isinstance(params, dict):
            return [err("Params field missing")]
        channel = params.get("channel")
        if channel == "instrument":
            return self._instrument(method, base, time_in)
        if channel not in CHANNELS:
            return [err(f"Channel {channel} not supported" if channel else "Channel field missing")]
        symbols = params.get("symbol")
        if not isinstance(symbols, list) or not symbols:
            return [err("Symbol field missing")]
        depth = params.get("depth", 10)
        if channel == "book" and depth not in DEPTHS:
            return [err(f"Invalid depth {depth}")]
        want_snapshot = bool(params.get("snapshot", channel != "trade"))
        out: list[Out] = []
        for sym in symbols:
            pair = self.universe.kraken_by_symbol.get(sym) if isinstance(sym, str) else None
            if pair is None or sym in self.sc.error_symbols:
                out.append(err(f"Currency pair not supported {sym}", symbol=sym))
                continue
            key = (channel, sym)
            result: dict = {"channel": channel, "symbol": sym}
            if channel == "book":
                result["depth"] = depth
            if method == "unsubscribe":
                if key not in self.streams:
                    out.append(err("Subscription Not Found", symbol=sym))
                    continue
                del self.streams[key]
                out.append(ctl({**base, "result": result, "success": True,
                                "time_in": time_in, "time_out": wall_rfc3339()}))
                continue
            if key in self.streams:
                out.append(err("Already subscribed", symbol=sym))
                continue
            result["snapshot"] = want_snapshot
            out.append(ctl({**base, "result": result, "success": True,
                            "time_in": time_in, "time_out": wall_rfc3339()}))
            self.subscribed_once = True
            out.extend(self._subscribe(channel, pair, depth, want_snapshot))
        return out

    def _instrument(self, method: str, base: dict, time_in: str) -> list[Out]:
        """The ``instrument`` channel: v2 symbols with their precisions (the
        alternative to AssetPairs for discovery).  Reference data only: it
        never produces steady data here."""
        ack = ctl({**base, "result": {"channel": "instrument", "snapshot": True},
                   "success": True, "time_in": time_in, "time_out": wall_rfc3339()})
        if method == "unsubscribe":
            return [ack]
        pairs = [{"symbol": p.symbol, "base": p.symbol.split("/")[0],
                  "quote": p.symbol.split("/")[1], "status": p.status,
                  "qty_precision": p.qty_decimals, "qty_increment": raw(fixed(1, p.qty_decimals)),
                  "price_precision": p.price_decimals, "cost_precision": 5,
                  "marginable": False, "has_index": True, "cost_min": raw("0.5"),
                  "tick_size": raw(fixed(1, p.price_decimals)),
                  "price_increment": raw(fixed(1, p.price_decimals)), "qty_min": raw("0.0001")}
                 for p in self.universe.kraken]
        assets = sorted({a for p in pairs for a in (p["base"], p["quote"])})
        snap = orjson.dumps({"channel": "instrument", "type": "snapshot", "data": {
            "assets": [{"id": a, "status": "enabled", "precision": 8,
                        "precision_display": 5, "borrowable": False,
                        "collateral_value": raw("0.0"), "margin_rate": raw("0.0")}
                       for a in assets],
            "pairs": pairs}})
        return [ack, dat(snap)]

    def _subscribe(self, channel: str, pair: KrakenPair, depth: int, snap: bool) -> list[Out]:
        seed, clock = self.sc.seed, self.clock
        if channel == "book":
            book = self.books[pair.symbol] = Book(pair, depth, seed, self.num,
                                                  self.sc.corrupt_checksum_every)
            self.streams[("book", pair.symbol)] = lambda: book.update(clock.tick())
            return [dat(book.snapshot())] if snap else []
        if channel == "trade":
            tr = self._trades(pair)
            self.streams[("trade", pair.symbol)] = lambda: tr.message("update", 1, clock.tick())
            return [dat(tr.message("snapshot", 10, clock.tick()))] if snap else []
        tk = Ticker(pair, seed, self.num)
        self.streams[("ticker", pair.symbol)] = lambda: tk.message("update", clock.tick())
        return [dat(tk.message("snapshot", clock.tick()))] if snap else []

    def _trades(self, pair: KrakenPair) -> Trades:
        if pair.symbol not in self.trades:
            self.trades[pair.symbol] = Trades(pair, self.sc.seed, self.num)
        return self.trades[pair.symbol]

    def corrupt_next_checksum(self, symbol: str | None = None) -> None:
        for sym, b in self.books.items():
            if symbol is None or sym == symbol:
                b.corrupt_next = True

    def large(self, size: int) -> bytes:
        """A trade update with as many trades as it takes to reach ``size``."""
        sym = next(iter(self.streams))[1] if self.streams else "BTC/USD"
        tr = self._trades(self.universe.kraken_by_symbol[sym])
        ts = self.clock.tick()
        one = len(orjson.dumps(tr.one(ts))) + 1
        return tr.message("update", size // one + 1, ts)

    def blast_frame(self, i: int, size: int) -> bytes:
        msg = orjson.dumps({"channel": "trade", "type": "update", "data": [{
            "symbol": "BTC/USD", "side": "buy", "price": raw("97000.0"),
            "qty": raw("0.00100000"), "ord_type": "market", "trade_id": i + 1,
            "timestamp": rfc3339(self.clock.tick())}]})
        return pad_json(msg, size)
