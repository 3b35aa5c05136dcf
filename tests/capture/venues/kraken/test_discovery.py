"""Kraken spot discovery: AssetPairs and the instrument snapshot, parsed and fetched."""
from __future__ import annotations

import asyncio

import orjson
import pytest

from capture.venues import get
from capture.venues.discovery import BadPage, DiscoveryError
from capture.venues.kraken import discovery as kraken
from discovery_helpers import FAST

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


def test_discover_trait_gives_one_unit_per_pair(server):
    base, script = server
    script.add("/0/public/AssetPairs", (200, orjson.dumps(ASSET_PAIRS)))
    units = asyncio.run(get("kraken").discover(base))
    assert units == [("BTC/USD", ("BTC/USD",)), ("DOGE/USD", ("DOGE/USD",)), ("ETH/BTC", ("ETH/BTC",))]
    assert get("kraken").rest_url == kraken.REST
