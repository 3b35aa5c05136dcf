"""Polymarket CLOB market channel: builders, classify, route by condition id."""
from __future__ import annotations

import orjson
import pytest

from capture.venues.polymarket import protocol as pm
from capture.venues.base import Kind, RouteKey
from capture.venues.polymarket.protocol import Polymarket
from common.errors import ConfigError

CID = "0x5f65177b394277fd294cd75650044e32ba009a95022d88a0c1d565897d72f8f1"
YES = "71321045679252212594626385532706912750332728571942532289631379312455583992563"
NO = "52114319501245915516055106046884209969926127482827954674443846427813813222426"

BOOK_YES = orjson.dumps({
    "event_type": "book", "asset_id": YES, "market": CID,
    "bids": [{"price": ".48", "size": "30"}, {"price": ".49", "size": "20"}],
    "asks": [{"price": ".52", "size": "25"}], "timestamp": "1757908892351",
    "hash": "0x0abc"})
# Observed order: level arrays first, event_type last.
BOOK_NO_TAIL = (b'{"market":"' + CID.encode() + b'","asset_id":"' + NO.encode()
                + b'","timestamp":"1757908892352","hash":"0xdef","bids":[{"price":"0.5","size":"1"}],'
                b'"asks":[],"tick_size":"0.01","event_type":"book","last_trade_price":"0.5"}')
PRICE_CHANGE = orjson.dumps({
    "market": CID, "price_changes": [
        {"asset_id": YES, "price": "0.5", "size": "200", "side": "BUY", "hash": "56621a",
         "best_bid": "0.5", "best_ask": "1"},
        {"asset_id": NO, "price": "0.5", "size": "200", "side": "SELL", "hash": "1895759e",
         "best_bid": "0", "best_ask": "0.5"}],
    "timestamp": "1757908892351", "event_type": "price_change"})
LAST_TRADE = orjson.dumps({"asset_id": YES, "event_type": "last_trade_price", "fee_rate_bps": "0",
                           "market": CID, "price": "0.456", "side": "BUY", "size": "219.217767",
                           "timestamp": "1750428146322"})
TICK = orjson.dumps({"event_type": "tick_size_change", "asset_id": YES, "market": CID,
                     "old_tick_size": "0.01", "new_tick_size": "0.001", "timestamp": "100000000"})
BEST = orjson.dumps({"event_type": "best_bid_ask", "market": CID, "asset_id": YES,
                     "best_bid": "0.73", "best_ask": "0.77", "spread": "0.04",
                     "timestamp": "1766789469958"})
NEW_MARKET = orjson.dumps({"id": "1031769", "question": "Will X?", "market": "0x311d0c", "slug": "x",
                           "assets_ids": ["1", "2"], "outcomes": ["Yes", "No"],
                           "timestamp": "1766790415550", "event_type": "new_market"})
RESOLVED = orjson.dumps({"id": "1031769", "market": "0x311d0c", "assets_ids": ["1", "2"],
                         "winning_asset_id": "1", "winning_outcome": "Yes",
                         "event_type": "market_resolved", "timestamp": "1766790415550"})


def test_builders():
    p = Polymarket()
    assert orjson.loads(p.initial([YES, NO])) == {"assets_ids": [YES, NO], "type": "market",
                                                  "custom_feature_enabled": True}
    assert orjson.loads(p.subscribe([YES])) == {"assets_ids": [YES], "operation": "subscribe"}
    assert orjson.loads(p.unsubscribe(NO)) == {"assets_ids": [NO], "operation": "unsubscribe"}
    assert p.ping() == b"PING"
    with pytest.raises(ConfigError):
        p.initial([])
    with pytest.raises(ConfigError):
        p.initial([str(i) for i in range(pm.MAX_TOKENS_PER_CONNECTION + 1)])
    assert Polymarket.keepalive.client_ping_interval == 10.0 and Polymarket.keepalive.app_ping


@pytest.mark.parametrize("raw,channel", [
    (BOOK_YES, "book"), (BOOK_NO_TAIL, "book"), (PRICE_CHANGE, "price_change"),
    (LAST_TRADE, "last_trade_price"), (TICK, "tick_size_change"), (BEST, "best_bid_ask"),
])
def test_every_event_routes_by_condition_id(raw, channel):
    assert pm.route(raw) == RouteKey(channel, CID)
    c = pm.classify(raw)
    assert (c.kind, c.channel, c.symbol) == (Kind.DATA, channel, CID)


def test_yes_and_no_share_the_route():
    assert pm.route(BOOK_YES).symbol == pm.route(BOOK_NO_TAIL).symbol == CID


def test_custom_feature_events():
    assert pm.route(NEW_MARKET) == RouteKey("new_market", "0x311d0c")
    assert pm.route(RESOLVED) == RouteKey("market_resolved", "0x311d0c")


def test_array_dump_routes_by_first_event():
    raw = b"[" + BOOK_NO_TAIL + b"," + LAST_TRADE + b"," + NEW_MARKET + b"]"
    assert pm.route(raw) == RouteKey("book", CID)
    assert pm.classify(raw).kind is Kind.DATA
    assert pm.exchange_ts_ns(raw) == 1757908892352 * 1_000_000
    assert pm.route(b" [ " + NEW_MARKET + b"]") == RouteKey("new_market", "0x311d0c")


def test_big_book_is_cheap_and_right():
    levels = ",".join('{"price":"0.%04d","size":"100.00"}' % (i % 10000) for i in range(70000))
    raw = ('{"market":"%s","asset_id":"%s","timestamp":"1757908892351","hash":"0x1",'
           '"bids":[%s],"asks":[%s],"event_type":"book"}' % (CID, YES, levels, levels)).encode()
    assert len(raw) > 2 * 1024 * 1024
    assert pm.route(raw) == RouteKey("book", CID)
    assert pm.classify(raw).kind is Kind.DATA
    assert pm.exchange_ts_ns(raw) == 1757908892351 * 1_000_000
    assert pm.route(b"[" + raw + b"," + RESOLVED + b"]") == RouteKey("book", CID)


def test_text_frames():
    assert pm.classify(b"PONG").kind is Kind.PONG
    assert pm.classify(b"PONG\n").kind is Kind.PONG
    assert pm.classify(b"[]").kind is Kind.INFO
    c = pm.classify(b"INVALID OPERATION")
    assert (c.kind, c.detail) == (Kind.ERROR, "INVALID OPERATION")
    for raw in (b"PONG", b"[]", b"INVALID OPERATION"):
        assert pm.route(raw) is None
        assert pm.sequence(raw) is None


@pytest.mark.parametrize("raw", [b"", b"\x00\x01garbage", b"{", b"[", b'[{"market":',
                                 b"[1,2,3]", b"\xff" * 300])
def test_malformed(raw):
    assert pm.classify(raw).kind in (Kind.MALFORMED, Kind.UNKNOWN)
    assert pm.route(raw) is None
    pm.exchange_ts_ns(raw)


def test_event_without_market_is_data_but_unrouted():
    raw = b'{"event_type":"book","asset_id":"1"}'
    assert pm.classify(raw).kind is Kind.DATA
    assert pm.route(raw) is None


def test_json_error_object():
    c = pm.classify(b'{"error":"bad request"}')
    assert (c.kind, c.detail) == (Kind.ERROR, "bad request")


def test_timestamps():
    assert pm.exchange_ts_ns(PRICE_CHANGE) == 1757908892351 * 1_000_000
    assert pm.exchange_ts_ns(b'{"event_type":"book","market":"0x1","timestamp":"abc"}') is None
