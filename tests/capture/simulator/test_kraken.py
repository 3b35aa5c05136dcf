"""Kraken spot v2 against the simulator: acks, errors, keepalives, and book
checksums recomputed independently from the exact digits received."""
from __future__ import annotations

import json
import zlib
from decimal import Decimal

import orjson

from capture.simulator import Scenario, Simulator
from simhelp import client, recv, recv_json, recv_until, run


def sub(channel: str, symbols: list[str], req_id: int, **params) -> bytes:
    return orjson.dumps({"method": "subscribe", "req_id": req_id,
                         "params": {"channel": channel, "symbol": symbols, **params}})


def test_status_then_one_ack_per_symbol_and_errors():
    async def body():
        async with Simulator(["kraken"], Scenario(rate=0)) as sim:
            async with client(sim.url("kraken")) as ws:
                status = await recv_json(ws)
                assert status["channel"] == "status" and status["data"][0]["system"] == "online"
                await ws.send(sub("ticker", ["BTC/USD", "ETH/USD", "NOPE/USD"], 7))
                acks = []
                while len(acks) < 3:
                    m = await recv_json(ws)
                    if m.get("method") == "subscribe":
                        acks.append(m)
                ok = [a for a in acks if a["success"]]
                assert [a["result"]["symbol"] for a in ok] == ["BTC/USD", "ETH/USD"]
                assert all(a["req_id"] == 7 and a["time_in"] and a["time_out"] for a in acks)
                bad = [a for a in acks if not a["success"]]
                assert len(bad) == 1 and "NOPE/USD" in bad[0]["error"]
                # The same subscription again is refused per symbol.
                await ws.send(sub("ticker", ["BTC/USD"], 8))
                m, _ = await recv_until(ws, lambda m: m.get("req_id") == 8)
                assert m["success"] is False and m["error"] == "Already subscribed"
                await ws.send(b'{"method":"ping","req_id":42}')
                m, _ = await recv_until(ws, lambda m: m.get("method") == "pong")
                assert m["req_id"] == 42
    run(body)


def test_subscribe_rate_limit():
    async def body():
        sc = Scenario(rate=0, subscribe_burst=2, subscribe_refill=0.0001)
        async with Simulator(["kraken"], sc) as sim:
            async with client(sim.url("kraken")) as ws:
                for i, sym in enumerate(["BTC/USD", "ETH/USD", "SOL/USD"]):
                    await ws.send(sub("trade", [sym], i + 1))
                m, _ = await recv_until(ws, lambda m: m.get("req_id") == 3)
                assert m == {**m, "success": False, "error": "Exceeded msg rate"}
    run(body)


def test_heartbeat_when_idle_after_subscribing():
    async def body():
        async with Simulator(["kraken"], Scenario(rate=0, heartbeat_interval=0.02)) as sim:
            async with client(sim.url("kraken")) as ws:
                await recv_json(ws)  # status
                await ws.send(sub("ticker", ["ADA/USD"], 1))
                assert (await recv_json(ws))["success"] is True
                assert (await recv_json(ws))["type"] == "snapshot"
                for _ in range(3):
                    assert await recv_json(ws) == {"channel": "heartbeat"}
    run(body)


def test_instrument_channel_lists_v2_symbols_with_precisions():
    async def body():
        async with Simulator(["kraken"], Scenario(rate=0)) as sim:
            async with client(sim.url("kraken")) as ws:
                await ws.send(b'{"method":"subscribe","params":{"channel":"instrument"},"req_id":3}')
                m, _ = await recv_until(ws, lambda m: m.get("channel") == "instrument")
                pairs = {p["symbol"]: p for p in m["data"]["pairs"]}
                assert set(pairs) == set(sim.symbols("kraken"))
                assert pairs["BTC/USD"]["price_precision"] == 1
                assert pairs["SHIB/USD"]["tick_size"] == "0.00000001"
    run(body)


def test_bursts_follow_steady_messages():
    async def body():
        # 2 msgs/s steady: 31 data messages in time only thanks to the burst.
        sc = Scenario(rate=2, burst_every=1, burst_size=30, max_messages=32)
        async with Simulator(["kraken"], sc) as sim:
            async with client(sim.url("kraken")) as ws:
                await ws.send(sub("trade", ["BTC/USD"], 1))
                n = 0
                while n < 31:
                    n += (await recv_json(ws)).get("channel") == "trade"
    run(body)


class ClientBook:
    """The test's own book, from the text digits; an independent checksum."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}

    def apply(self, side: dict[str, str], levels: list[dict], bids: bool) -> None:
        for lv in levels:
            if Decimal(lv["qty"]) == 0:
                side.pop(lv["price"], None)
            else:
                side[lv["price"]] = lv["qty"]
        order = sorted(side, key=Decimal, reverse=bids)
        for p in order[self.depth:]:
            del side[p]

    def checksum(self) -> int:
        def digits(p: str, q: str) -> str:
            return p.replace(".", "").lstrip("0") + q.replace(".", "").lstrip("0")
        asks = sorted(self.asks, key=Decimal)[:10]
        bids = sorted(self.bids, key=Decimal, reverse=True)[:10]
        s = "".join(digits(p, self.asks[p]) for p in asks)
        s += "".join(digits(p, self.bids[p]) for p in bids)
        return zlib.crc32(s.encode())


def _book_run(symbol: str, decimals: int, n: int, corrupt_every: int = 0, strings=False):
    async def body():
        sc = Scenario(rate=float("inf"), corrupt_checksum_every=corrupt_every,
                      kraken_decimal_strings=strings, max_messages=n)
        async with Simulator(["kraken"], sc) as sim:
            async with client(sim.url("kraken")) as ws:
                await ws.send(sub("book", [symbol], 1, depth=10))
                book, good, bad, raws = ClientBook(10), 0, 0, []
                while good + bad < n:
                    raw = await recv(ws)
                    m = orjson.loads(raw)
                    if m.get("channel") != "book":
                        continue
                    raws.append(raw)
                    d = json.loads(raw, parse_float=str, parse_int=str)["data"][0]
                    if m["type"] == "snapshot":
                        book = ClientBook(10)
                    book.apply(book.bids, d["bids"], True)
                    book.apply(book.asks, d["asks"], False)
                    for lv in d["bids"] + d["asks"]:
                        for k in ("price", "qty"):
                            places = 8 if k == "qty" else decimals
                            assert len(lv[k].split(".")[1]) == places, lv
                    if book.checksum() == int(d["checksum"]):
                        good += 1
                    else:
                        bad += 1
                return good, bad, raws
    return run(body)


def test_book_checksums_valid_from_exact_digits():
    # SHIB: 8 decimals and leading zeros (0.00002000); BTC: 1 decimal.
    for symbol, dec in (("SHIB/USD", 8), ("BTC/USD", 1)):
        good, bad, raws = _book_run(symbol, dec, 300)
        assert (good, bad) == (300, 0)
        # Number literals with trailing zeros, not strings (like the venue).
        assert '"qty":"' not in raws[0] and '"price":"' not in raws[0]


def test_book_checksums_as_strings_option():
    good, bad, raws = _book_run("DOGE/USD", 7, 50, strings=True)
    assert (good, bad) == (50, 0) and '"price":"0.' in raws[0]


def test_corrupted_checksums_are_injected():
    good, bad, _ = _book_run("ETH/USD", 2, 100, corrupt_every=10)
    # Every 10th book message lies; the client's book stays right, so only
    # those mismatch.
    assert bad == 10 and good == 90


def test_trade_ids_sequential_and_ticker_shape():
    async def body():
        async with Simulator(["kraken"], Scenario(rate=float("inf"), max_messages=100)) as sim:
            async with client(sim.url("kraken")) as ws:
                await ws.send(sub("trade", ["BTC/USD"], 1, snapshot=True))
                await ws.send(sub("ticker", ["XRP/USD"], 2))
                ids, tickers = [], []
                while len(ids) < 40 or not tickers:
                    m = await recv_json(ws)
                    if m.get("channel") == "trade":
                        ids += [int(t["trade_id"]) for t in m["data"]]
                    if m.get("channel") == "ticker":
                        tickers.append(m["data"][0])
                assert ids == list(range(ids[0], ids[0] + len(ids)))
                t = tickers[0]
                assert {"bid", "ask", "last", "volume", "vwap", "timestamp"} <= set(t)
                assert len(t["bid"].split(".")[1]) == 5
    run(body)


def test_injected_corruption_hits_one_symbol_only():
    async def body():
        async with Simulator(["kraken"], Scenario(rate=0)) as sim:
            async with client(sim.url("kraken")) as ws:
                await ws.send(sub("book", ["BTC/USD", "ETH/USD"], 1))
                books = {"BTC/USD": ClientBook(10), "ETH/USD": ClientBook(10)}
                seen, bad = 0, []
                while seen < 22:  # 2 snapshots, then 20 updates
                    raw = await recv(ws)
                    if not raw.startswith('{"channel":"book"'):
                        continue
                    seen += 1
                    if seen == 2:
                        sim.inject("kraken", "corrupt_checksum", symbol="ETH/USD")
                        sim.inject("kraken", "data", count=20)
                    d = json.loads(raw, parse_float=str, parse_int=str)["data"][0]
                    b = books[d["symbol"]]
                    b.apply(b.bids, d["bids"], True)
                    b.apply(b.asks, d["asks"], False)
                    if b.checksum() != int(d["checksum"]):
                        bad.append(d["symbol"])
                assert bad == ["ETH/USD"]
    run(body)
