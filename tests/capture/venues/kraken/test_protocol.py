"""Kraken spot v2: builders, classify, route, timestamps — plain bytes in."""
from __future__ import annotations

import orjson
import pytest

from capture.venues.kraken import protocol as kraken
from capture.venues.base import Kind, RouteKey
from capture.venues.kraken.protocol import KrakenSpot
from common.errors import ConfigError

ACK = (b'{"method":"subscribe","result":{"channel":"book","depth":10,"snapshot":true,'
       b'"symbol":"BTC/USD"},"success":true,"time_in":"2023-09-25T09:04:31.742599Z",'
       b'"time_out":"2023-09-25T09:04:31.742648Z","req_id":7}')
ACK_TICKER = (b'{"method":"subscribe","result":{"channel":"ticker","symbol":"ETH/USD"},'
              b'"success":true,"req_id":8}')
ERR = (b'{"error":"Currency pair not supported ABC/USD","method":"subscribe","req_id":9,'
       b'"success":false,"symbol":"ABC/USD","time_in":"2023-09-25T09:04:31.742599Z",'
       b'"time_out":"2023-09-25T09:04:31.742648Z"}')
RATE = b'{"error":"Exceeded msg rate","method":"subscribe","req_id":10,"success":false}'
UNSUB = (b'{"method":"unsubscribe","result":{"channel":"trade","symbol":"BTC/USD"},'
         b'"success":true,"req_id":11}')
PONG = b'{"method":"pong","req_id":12,"time_in":"2023-09-24T14:10:23.799685Z","time_out":"2023-09-24T14:10:23.799703Z"}'
HEARTBEAT = b'{"channel":"heartbeat"}'
STATUS = (b'{"channel":"status","type":"update","data":[{"version":"2.0.0","system":"online",'
          b'"api_version":"v2","connection_id":123}]}')
BOOK = (b'{"channel":"book","type":"snapshot","data":[{"symbol":"MATIC/USD",'
        b'"bids":[{"price":0.5666,"qty":4831.75496356}],"asks":[{"price":0.5668,"qty":4410.79769455}],'
        b'"checksum":2439117997,"timestamp":"2023-10-06T17:35:55.440295Z"}]}')
TICKER = (b'{"channel":"ticker","type":"snapshot","data":[{"symbol":"ALGO/USD","bid":0.10025,'
          b'"bid_qty":740.0,"ask":0.10036,"ask_qty":1361.44813783,"last":0.10035,"volume":997038.98383185,'
          b'"vwap":0.10148,"low":0.09979,"high":0.10285,"change":-0.00017,"change_pct":-0.17,'
          b'"timestamp":"2023-10-06T17:35:55.440295Z"}]}')
TRADE = (b'{"channel":"trade","type":"update","data":[{"symbol":"MATIC/USD","side":"sell",'
         b'"price":0.5117,"qty":40.0,"ord_type":"market","trade_id":4665906,'
         b'"timestamp":"2023-09-25T07:49:37.708706Z"}]}')
INSTRUMENT = b'{"channel":"instrument","type":"snapshot","data":{"assets":[],"pairs":[]}}'


def test_subscribe_message_shape_and_req_ids():
    k = KrakenSpot()
    m1 = orjson.loads(k.subscribe("book", ["BTC/USD", "ETH/USD"], depth=25))
    assert m1 == {"method": "subscribe", "params": {"channel": "book", "symbol": ["BTC/USD", "ETH/USD"],
                                                    "depth": 25, "snapshot": True}, "req_id": 1}
    m2 = orjson.loads(k.subscribe("ticker", "BTC/USD"))
    assert m2 == {"method": "subscribe", "params": {"channel": "ticker", "symbol": ["BTC/USD"],
                                                    "snapshot": True}, "req_id": 2}
    assert orjson.loads(k.ping()) == {"method": "ping", "req_id": 3}
    assert orjson.loads(k.unsubscribe("book", ["BTC/USD"], depth=25)) == {
        "method": "unsubscribe", "params": {"channel": "book", "symbol": ["BTC/USD"], "depth": 25},
        "req_id": 4}
    assert orjson.loads(k.subscribe("trade", ["X/Y"], req_id=99))["req_id"] == 99
    assert orjson.loads(k.subscribe("instrument"))["params"] == {"channel": "instrument",
                                                                  "snapshot": True}


@pytest.mark.parametrize("call", [
    lambda k: k.subscribe("book", ["BTC/USD"], depth=7),
    lambda k: k.subscribe("level9", ["BTC/USD"]),
    lambda k: k.subscribe("trade", []),
])
def test_subscribe_refuses_bad_arguments(call):
    with pytest.raises(ConfigError):
        call(KrakenSpot())


@pytest.mark.parametrize("raw,kind,channel,symbol,req_id", [
    (ACK, Kind.ACK, "book", "BTC/USD", 7),
    (ACK_TICKER, Kind.ACK, "ticker", "ETH/USD", 8),
    (ERR, Kind.ERROR, None, "ABC/USD", 9),
    (RATE, Kind.ERROR, None, None, 10),
    (UNSUB, Kind.UNSUBSCRIBED, "trade", "BTC/USD", 11),
    (PONG, Kind.PONG, None, None, 12),
    (HEARTBEAT, Kind.HEARTBEAT, "heartbeat", None, None),
    (STATUS, Kind.INFO, "status", None, None),
    (BOOK, Kind.DATA, "book", "MATIC/USD", None),
    (TICKER, Kind.DATA, "ticker", "ALGO/USD", None),
    (TRADE, Kind.DATA, "trade", "MATIC/USD", None),
    (INSTRUMENT, Kind.DATA, "instrument", "all", None),
])
def test_classify_every_shape(raw, kind, channel, symbol, req_id):
    c = kraken.classify(raw)
    assert (c.kind, c.channel, c.symbol, c.req_id) == (kind, channel, symbol, req_id)


def test_classify_error_detail_and_status_detail():
    assert kraken.classify(ERR).detail == "Currency pair not supported ABC/USD"
    assert kraken.classify(RATE).detail == "Exceeded msg rate"
    assert kraken.classify(STATUS).detail == "online"


def test_classify_pretty_printed_and_reordered_control():
    raw = orjson.dumps({"success": True, "req_id": 3, "result": {"symbol": "BTC/USD",
                        "channel": "trade"}, "method": "subscribe"}, option=orjson.OPT_INDENT_2)
    c = kraken.classify(raw)
    assert (c.kind, c.channel, c.symbol, c.req_id) == (Kind.ACK, "trade", "BTC/USD", 3)
    assert kraken.classify(b'  {"channel" : "heartbeat"}\n').kind is Kind.HEARTBEAT


def test_classify_big_book_is_data_without_parsing():
    levels = b",".join(b'{"price":%d.10000000,"qty":1.00000000}' % i for i in range(60000))
    raw = (b'{"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD","bids":[' + levels
           + b'],"asks":[],"checksum":1,"timestamp":"2023-10-06T17:35:55.440295Z"}]}')
    assert len(raw) > 2 * 1024 * 1024
    c = kraken.classify(raw)
    assert (c.kind, c.channel, c.symbol) == (Kind.DATA, "book", "BTC/USD")
    # Truncated (not JSON) but the head says data: still classified as data.
    assert kraken.classify(raw[:1000]).kind is Kind.DATA
    assert kraken.exchange_ts_ns(raw) == 1696613755440295000


@pytest.mark.parametrize("raw", [b"", b"   ", b"not json", b"\x00\xff\xfe", b"[1,2]",
                                 b'{"channel":', b"{", b'{"method":"subscribe",', b"PONG",
                                 b'{"channel":"book","data":[{"symbol":'])
def test_malformed_never_raises(raw):
    c = kraken.classify(raw)
    assert c.kind in (Kind.MALFORMED, Kind.UNKNOWN, Kind.DATA)
    kraken.route(raw)
    kraken.exchange_ts_ns(raw)
    assert kraken.sequence(raw) is None


def test_malformed_kinds():
    assert kraken.classify(b"garbage").kind is Kind.MALFORMED
    assert kraken.classify(b'{"method":"subscribe",').kind is Kind.MALFORMED
    assert kraken.classify(b'{"foo":1}').kind is Kind.UNKNOWN
    assert kraken.route(b"garbage") is None
    assert kraken.route(b'{"channel":"book","data":[{"symbol":') is None


def test_route():
    assert kraken.route(BOOK) == RouteKey("book", "MATIC/USD")
    assert kraken.route(TICKER) == RouteKey("ticker", "ALGO/USD")
    assert kraken.route(TRADE) == RouteKey("trade", "MATIC/USD")
    assert kraken.route(INSTRUMENT) == RouteKey("instrument", "all")
    for control in (ACK, ERR, UNSUB, PONG, HEARTBEAT, STATUS):
        assert kraken.route(control) is None


def test_route_symbol_with_escape():
    raw = b'{"channel":"trade","type":"update","data":[{"symbol":"A\\/B","price":1}]}'
    assert kraken.route(raw) == RouteKey("trade", "A/B")


def test_exchange_timestamp():
    assert kraken.exchange_ts_ns(TRADE) == 1695628177708706000
    assert kraken.exchange_ts_ns(HEARTBEAT) is None


def test_keepalive_facts():
    assert KrakenSpot.keepalive.app_ping and KrakenSpot.keepalive.server_heartbeat == 1.0
    assert KrakenSpot.url == "wss://ws.kraken.com/v2"


@pytest.mark.parametrize("raw", [
    b'{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[]}]}',
    b' {"channel":"book","type":"update","data":[{"symbol":"BTC/USD"}]}',
    b'{"channel": "book", "type": "update", "data": [{"symbol": "BTC/USD"}]}',
    b'{"type":"update","channel":"trade","data":[{"symbol":"ETH/USD"}]}',
    b'{"channel":"book","type":"update","data":[{"symbol":"A\\u0042/USD"}]}',
    b'{"channel":"book","type":"update","data":[{"symbol":"\xff\xfe"}]}',
    b'{"channel":"book","type":"update","data":[{"symbol":""}]}',
    b'{"channel":"heartbeat"}',
    b'{"channel":"status","type":"update","data":[{"symbol":"x"}]}',
    b'{"channel":"instrument","type":"snapshot","data":{"pairs":[]}}',
    b'{"channel":"ohlc","type":"update","data":[{"symbol":"BTC/USD"}]}',
    b'{"channel":"book","type":"update","data":[{"symbol":"BTC/USD"}],"method":"subscribe"}',
    b'{"channel":"book","type":"update","data":[{"symbol":"BTC/USD"',
])
def test_route_fast_path_gives_the_full_scans_answer(raw):
    assert kraken.route(raw) == kraken._route_scan(raw)
