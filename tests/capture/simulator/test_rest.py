"""REST discovery on the simulator: shapes, pagination to the end, and
scripted page failures that a client must retry."""
from __future__ import annotations

import urllib.error
import urllib.request

import orjson
import pytest

from capture.simulator import Scenario, SimulatorThread
from timing import timeout


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout(10)) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {"body": e.read()}


@pytest.fixture(scope="module")
def sim():
    with SimulatorThread(scenario=Scenario(instruments=40, page_failures={1: 2})) as st:
        yield st


def test_kraken_asset_pairs(sim):
    status, body = get(sim.rest_url("kraken") + "/0/public/AssetPairs")
    assert status == 200 and body["error"] == []
    pairs = body["result"]
    assert pairs["XXBTZUSD"]["wsname"] == "XBT/USD" and pairs["XXDGZUSD"]["wsname"] == "XDG/USD"
    assert len(pairs) == 40
    assert {p["status"] for p in pairs.values()} >= {"online", "cancel_only"}
    # Every listed pair (mapped to v2 naming) is subscribable on the WebSocket.
    v2 = {p["wsname"].replace("XBT/", "BTC/").replace("XDG/", "DOGE/") for p in pairs.values()}
    assert v2 == set(sim.sim.symbols("kraken"))


def test_futures_instruments(sim):
    status, body = get(sim.rest_url("kraken_futures") + "/derivatives/api/v3/instruments")
    assert status == 200 and body["result"] == "success"
    assert "PF_XBTUSD" in {i["symbol"] for i in body["instruments"]}


def test_gamma_keyset_pages_with_failure_and_retry(sim):
    base = sim.rest_url("polymarket") + "/markets/keyset?limit=15"
    markets, cursor, failures = [], None, 0
    while True:
        url = base + (f"&after_cursor={cursor}" if cursor else "")
        status, body = get(url)
        if status == 500:          # page 1 fails twice, then answers
            failures += 1
            continue
        markets += body["markets"]
        cursor = body.get("next_cursor")
        if cursor is None:
            break
    assert failures == 2 and len(markets) == 40
    m = markets[0]
    tokens = orjson.loads(m["clobTokenIds"])
    assert orjson.loads(m["outcomes"]) == ["Yes", "No"] and len(tokens) == 2
    assert m["conditionId"].startswith("0x") and {"active", "closed"} <= set(m)
    assert any(x["closed"] for x in markets) and any(not x["active"] for x in markets)
    all_tokens = [t for x in markets for t in orjson.loads(x["clobTokenIds"])]
    assert all_tokens == sim.sim.symbols("polymarket")


def test_kalshi_markets_cursor_and_status(sim):
    base = sim.rest_url("kalshi") + "/trade-api/v2/markets?limit=10&status=open"
    got, cursor, failures = [], "", 0
    while True:
        status, body = get(base + (f"&cursor={cursor}" if cursor else ""))
        if status == 500:
            failures += 1
            continue
        got += body["markets"]
        cursor = body["cursor"]
        if not cursor:
            break
    assert failures == 2
    assert got and all(m["status"] == "active" for m in got)
    assert len(got) < 40 and got[0]["ticker"] == "KXBTCD-26JAN01-T97000"


def test_unknown_path_is_404_and_bad_cursor_400(sim):
    assert get(sim.rest_url("kalshi") + "/nope")[0] == 404
    assert get(sim.rest_url("polymarket") + "/markets/keyset?after_cursor=%%%")[0] == 400
