"""Discovery: pure parsers, the cursor pager, and fetchers against a local HTTP server."""
from __future__ import annotations

import asyncio
import http.server
import random
import threading
import urllib.parse
from collections import defaultdict

import orjson
import pytest

from capture.venues import discovery as d
from capture.venues.discovery import BadPage, CursorPager, DiscoveryError, RetryPolicy
from capture.venues.kalshi import discovery as kalshi
from capture.venues.kraken import discovery as kraken
from capture.venues.kraken_futures import discovery as futures
from capture.venues.polymarket import discovery as polymarket

FAST = RetryPolicy(attempts=4, base_delay=0.0, max_delay=0.0, timeout=10.0)

ASSET_PAIRS = {
    "error": [],
    "result": {
        "XXBTZUSD": {"altname": "XBTUSD", "wsname": "XBT/USD", "base": "XXBT", "quote": "ZUSD",
                     "pair_decimals": 1, "lot_decimals": 8, "status": "online"},
        "XDGUSD": {"altname": "XDGUSD", "wsname": "XDG/USD", "base": "XXDG", "quote": "ZUSD",
                   "pair_decimals": 7, "lot_decimals": 8, "status": "online"},
        "XETHXXBT": {"altname": "ETHXBT", "wsname": "ETH/XBT", "status": "online"},
        "ADAEUR": {"altname": "ADAEUR", "wsname": "ADA/EUR", "status": "cancel_only"},
        "XXBTZUSD.d": {"altname": "XBTUSD.d", "status": "online"},   # no wsname: not on WS
        "LUNAUSD": {"altname": "LUNAUSD", "wsname": "LUNA/USD", "status": "reduce_only"},
    },
}


def _gm(cid, tokens, active=True, closed=False, **kw):
    return {"conditionId": cid, "clobTokenIds": orjson.dumps(tokens).decode(),
            "outcomes": '["Yes", "No"]', "active": active, "closed": closed, **kw}


# --------------------------------------------------------------------------- parsers

def test_kraken_pairs():
    pairs = kraken.parse_kraken_asset_pairs(orjson.dumps(ASSET_PAIRS))
    assert [p.symbol for p in pairs] == ["BTC/USD", "DOGE/USD", "ETH/BTC"]
    btc = pairs[0]
    assert (btc.wsname, btc.altname, btc.pair_decimals, btc.lot_decimals) == ("XBT/USD", "XBTUSD", 1, 8)
    more = kraken.parse_kraken_asset_pairs(ASSET_PAIRS, statuses=("online", "cancel_only"))
    assert "ADA/EUR" in [p.symbol for p in more]
    assert kraken.kraken_symbol("XBT/XDG") == "BTC/DOGE"
    with pytest.raises(BadPage):
        kraken.parse_kraken_asset_pairs(b'{"error":["EGeneral:Temporary lockout"]}')
    with pytest.raises(BadPage):
        kraken.parse_kraken_asset_pairs(b"<html>")


def test_kraken_instrument_snapshot():
    frame = {"channel": "instrument", "type": "snapshot", "data": {
        "assets": [{"id": "BTC", "status": "enabled"}],
        "pairs": [{"symbol": "BTC/USD", "base": "BTC", "quote": "USD", "status": "online",
                   "price_precision": 1, "qty_precision": 8},
                  {"symbol": "ADA/EUR", "status": "maintenance"},
                  {"symbol": "DOGE/USD", "status": "online", "price_precision": 7,
                   "qty_precision": 8}]}}
    pairs = kraken.parse_kraken_instrument_snapshot(orjson.dumps(frame))
    assert [(p.symbol, p.pair_decimals, p.lot_decimals) for p in pairs] == [
        ("BTC/USD", 1, 8), ("DOGE/USD", 7, 8)]
    with pytest.raises(BadPage):
        kraken.parse_kraken_instrument_snapshot(b'{"channel":"book","data":{}}')


def test_gamma_page_and_filter():
    page = {"markets": [
        _gm("0x1", ["11", "12"]),
        _gm("0x2", ["21", "22"], closed=True),
        _gm("0x3", ["31", "32"], active=False),
        _gm("0x4", ["41", "42"], enableOrderBook=False),
        _gm("0x5", ["12", "52"]),          # token 12 already seen: dropped, 52 kept
        _gm("0x1", ["11", "12"]),          # same market again
        _gm("0x6", ["61", "61"]),          # duplicate inside one market
        {"conditionId": "0x7", "clobTokenIds": "not json", "active": True, "closed": False},
        _gm("0x8", ["81", "82"], active="true", closed="false"),
    ], "next_cursor": "abc"}
    markets, cursor = polymarket.parse_gamma_page(orjson.dumps(page))
    assert cursor == "abc"
    got = polymarket.gamma_markets(markets)
    assert [(m.condition_id, m.token_ids) for m in got] == [
        ("0x1", ("11", "12")), ("0x5", ("52",)), ("0x6", ("61",)), ("0x8", ("81", "82"))]
    assert got[0].outcomes == ("Yes", "No")
    assert polymarket.parse_gamma_page(b'{"markets":[]}') == ([], None)
    assert polymarket.parse_gamma_page(b'{"markets":[],"next_cursor":""}') == ([], None)
    assert polymarket.parse_gamma_page(b'{"markets":[],"next_cursor":"LTE="}') == ([], None)
    for bad in (b"[]", b'{"data":[]}', b'{"markets":[],"next_cursor":5}', b"oops"):
        with pytest.raises(BadPage):
            polymarket.parse_gamma_page(bad)


def test_kalshi_page():
    body = {"markets": [{"ticker": "A", "event_ticker": "E", "status": "active"},
                        {"ticker": "B"}, {"ticker": "A"}, {"nope": 1}], "cursor": ""}
    markets, cursor = kalshi.parse_kalshi_page(orjson.dumps(body))
    assert cursor is None
    assert [(m.ticker, m.event_ticker, m.status) for m in kalshi.kalshi_markets(markets)] == [
        ("A", "E", "active"), ("B", None, None)]
    with pytest.raises(BadPage):
        kalshi.parse_kalshi_page(b'{"cursor":"x"}')


def test_futures_instruments():
    body = {"result": "success", "instruments": [
        {"symbol": "PF_XBTUSD", "type": "flexible_futures", "tradeable": True},
        {"symbol": "pi_ethusd", "type": "futures_inverse", "tradeable": True},
        {"symbol": "PF_OLD", "tradeable": False},
        {"symbol": "PF_XBTUSD", "tradeable": True}]}
    got = futures.parse_futures_instruments(orjson.dumps(body))
    assert [(i.symbol, i.type) for i in got] == [("PF_XBTUSD", "flexible_futures"),
                                                 ("PI_ETHUSD", "futures_inverse")]
    with pytest.raises(BadPage):
        futures.parse_futures_instruments(b'{"result":"error","error":"x","instruments":[]}')


def test_changes():
    assert d.changes(["a", "b"], ["b", "c"]) == (["c"], ["a"])


# --------------------------------------------------------------------------- pager

def test_cursor_pager_states():
    p = CursorPager("http://h/markets", {"limit": 2}, "cursor", kalshi.parse_kalshi_page)
    assert p.next_url() == "http://h/markets?limit=2"
    p.feed(b'{"markets":[{"ticker":"A"}],"cursor":"c1"}')
    assert p.next_url() == "http://h/markets?limit=2&cursor=c1"
    with pytest.raises(BadPage):
        p.feed(b"garbage")
    assert p.next_url() == "http://h/markets?limit=2&cursor=c1"   # bad page: no advance
    p.feed(b'{"markets":[{"ticker":"B"}],"cursor":""}')
    assert p.done and p.next_url() is None and p.pages == 2
    assert [m["ticker"] for m in p.items] == ["A", "B"]
    with pytest.raises(DiscoveryError):
        p.feed(b'{"markets":[],"cursor":""}')


def test_cursor_pager_refuses_loops():
    p = CursorPager("http://h/m", {}, "cursor", kalshi.parse_kalshi_page)
    p.feed(b'{"markets":[{"ticker":"A"}],"cursor":"c1"}')
    p.feed(b'{"markets":[{"ticker":"B"}],"cursor":"c2"}')
    with pytest.raises(DiscoveryError, match="repeated"):
        p.feed(b'{"markets":[{"ticker":"C"}],"cursor":"c1"}')


def test_retry_policy_delays_are_capped_and_jittered():
    pol = RetryPolicy(base_delay=0.5, max_delay=4.0)
    rng = random.Random(1)
    for n in range(12):
        assert 0.0 <= pol.delay(n, rng) <= min(4.0, 0.5 * 2 ** n)


# --------------------------------------------------------------------------- fetchers

class Script:
    """Scripted responses per (path, query): a list consumed in order; the
    last entry repeats.  Each entry is (status, body, headers)."""

    def __init__(self) -> None:
        self.routes: dict[str, list[tuple[int, bytes, dict]]] = {}
        self.hits: defaultdict[str, int] = defaultdict(int)
        self.lock = threading.Lock()

    def add(self, target: str, *responses) -> None:
        self.routes[target] = [r if len(r) == 3 else (*r, {}) for r in responses]

    def respond(self, target: str) -> tuple[int, bytes, dict]:
        with self.lock:
            n = self.hits[target]
            self.hits[target] += 1
        rs = self.routes.get(target)
        if not rs:
            return 404, b"not found", {}
        return rs[min(n, len(rs) - 1)]


@pytest.fixture
def server():
    script = Script()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            status, body, headers = script.respond(self.path)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join()


def _gamma_page(tokens_from: int, n: int, cursor: str | None) -> bytes:
    page: dict = {"markets": [_gm(f"0x{i:x}", [f"{i}1", f"{i}2"]) for i in range(tokens_from,
                                                                             tokens_from + n)]}
    if cursor is not None:
        page["next_cursor"] = cursor
    return orjson.dumps(page)


def test_gamma_pages_retried_not_truncated(server):
    base, script = server
    script.add("/markets/keyset?limit=3&active=true&closed=false", (200, _gamma_page(0, 3, "c1")))
    script.add("/markets/keyset?limit=3&active=true&closed=false&after_cursor=c1",
               (500, b"boom"), (200, b'{"markets":[{"conditionId":'), (429, b"slow down", {"Retry-After": "0"}),
               (200, _gamma_page(3, 3, "c2")))
    script.add("/markets/keyset?limit=3&active=true&closed=false&after_cursor=c2", (200, _gamma_page(6, 2, None)))
    got = asyncio.run(polymarket.fetch_gamma_markets(base, limit=3, policy=FAST))
    assert [m.condition_id for m in got] == [f"0x{i:x}" for i in range(8)]
    assert script.hits["/markets/keyset?limit=3&active=true&closed=false&after_cursor=c1"] == 4


def test_gamma_page_that_keeps_failing_raises(server):
    base, script = server
    script.add("/markets/keyset?limit=3&active=true&closed=false", (200, _gamma_page(0, 3, "c1")))
    script.add("/markets/keyset?limit=3&active=true&closed=false&after_cursor=c1", (503, b"down"))
    with pytest.raises(DiscoveryError) as ei:
        asyncio.run(polymarket.fetch_gamma_markets(base, limit=3, policy=FAST))
    assert "after_cursor=c1" in ei.value.url
    assert ei.value.attempts == FAST.attempts and "503" in ei.value.reason
    assert script.hits["/markets/keyset?limit=3&active=true&closed=false&after_cursor=c1"] == FAST.attempts


def test_non_retryable_status_fails_at_once(server):
    base, script = server
    with pytest.raises(DiscoveryError) as ei:
        asyncio.run(kraken.fetch_kraken_pairs(base, policy=FAST))
    assert ei.value.attempts == 1 and "404" in ei.value.reason


def test_kraken_pairs_fetch(server):
    base, script = server
    script.add("/0/public/AssetPairs", (502, b"bad gateway"), (200, orjson.dumps(ASSET_PAIRS)))
    pairs = asyncio.run(kraken.fetch_kraken_pairs(base + "/", policy=FAST))
    assert [p.symbol for p in pairs] == ["BTC/USD", "DOGE/USD", "ETH/BTC"]


def test_kalshi_cursor_loop(server):
    base, script = server
    q = "/trade-api/v2/markets?limit=2&status=open"
    script.add(q, (200, b'{"markets":[{"ticker":"A"},{"ticker":"B"}],"cursor":"x1"}'))
    script.add(q + "&cursor=x1", (500, b""), (200, b'{"markets":[{"ticker":"C"}],"cursor":"x2"}'))
    script.add(q + "&cursor=x2", (200, b'{"markets":[],"cursor":""}'))
    got = asyncio.run(kalshi.fetch_kalshi_markets(base + "/trade-api/v2", limit=2, policy=FAST))
    assert [m.ticker for m in got] == ["A", "B", "C"]


def test_futures_fetch(server):
    base, script = server
    script.add("/derivatives/api/v3/instruments",
               (200, b'{"result":"success","instruments":[{"symbol":"PF_XBTUSD","tradeable":true}]}'))
    got = asyncio.run(futures.fetch_futures_instruments(base + "/derivatives/api/v3", policy=FAST))
    assert [i.symbol for i in got] == ["PF_XBTUSD"]


def test_unreachable_host_raises_typed_error():
    # A port nothing listens on: connection refused on every attempt.
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(DiscoveryError) as ei:
        asyncio.run(futures.fetch_futures_instruments(f"http://127.0.0.1:{port}",
                                                policy=RetryPolicy(attempts=2, base_delay=0,
                                                                   max_delay=0, timeout=5)))
    assert ei.value.attempts == 2
    with pytest.raises(DiscoveryError):
        asyncio.run(d.fetch_page("file:///etc/passwd", bytes, FAST))
    assert urllib.parse.urlparse(ei.value.url).port == port
