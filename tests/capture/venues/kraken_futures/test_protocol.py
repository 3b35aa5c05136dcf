"""Kraken Futures v1: builders, classify, route, seq, timestamps."""
from __future__ import annotations

import orjson
import pytest

from capture.venues.kraken_futures import protocol as kf
from capture.venues.base import GapDetector, Kind, RouteKey, SeqInfo
from capture.venues.kraken_futures.protocol import KrakenFutures
from common.errors import ConfigError

INFO = b'{"event":"info","version":1}'
SUBSCRIBED = b'{"event":"subscribed","feed":"book","product_ids":["PF_XBTUSD"]}'
UNSUBSCRIBED = b'{"event":"unsubscribed","feed":"trade","product_ids":["PF_ETHUSD"]}'
ERROR = b'{"event":"error","message":"Invalid product id"}'
ALERT = b'{"event":"alert","message":"Bad websocket message"}'
HEARTBEAT = b'{"feed":"heartbeat","time":1534262350627}'
BOOK_SNAPSHOT = (b'{"feed":"book_snapshot","product_id":"PF_XBTUSD","timestamp":1612269825817,'
                 b'"seq":326072249,"tickSize":null,"bids":[{"price":34892.5,"qty":6385},'
                 b'{"price":34892,"qty":10924}],"asks":[{"price":34911.5,"qty":20598}]}')
BOOK_DELTA = (b'{"feed":"book","product_id":"PF_XBTUSD","side":"sell","seq":326072250,'
              b'"price":34981.0,"qty":0.0,"timestamp":1612269953629}')
TRADE_SNAPSHOT = (b'{"feed":"trade_snapshot","product_id":"PF_XBTUSD","trades":[{"feed":"trade",'
                  b'"product_id":"PF_XBTUSD","uid":"caa9c653","side":"sell","type":"fill","seq":655508,'
                  b'"time":1612266317519,"qty":15000,"price":34969.5}]}')
TRADE = (b'{"feed":"trade","product_id":"PF_XBTUSD","uid":"05af78ac","side":"sell","type":"fill",'
         b'"seq":653355,"time":1612266317519,"qty":15000,"price":34969.5}')
TICKER = (b'{"time":1612270825335,"product_id":"PF_XBTUSD","funding_rate":1.18e-8,'
          b'"bid":34832.5,"ask":34847.5,"bid_size":42864,"ask_size":2300,"volume":262306237,'
          b'"feed":"ticker","leverage":"50x","index":34853.3,"last":34846,"change":2.9}')


def test_builders():
    f = KrakenFutures()
    assert orjson.loads(f.subscribe("book", ["PF_XBTUSD", "PF_ETHUSD"])) == {
        "event": "subscribe", "feed": "book", "product_ids": ["PF_XBTUSD", "PF_ETHUSD"]}
    assert orjson.loads(f.unsubscribe("ticker", "PF_XBTUSD")) == {
        "event": "unsubscribe", "feed": "ticker", "product_ids": ["PF_XBTUSD"]}
    assert orjson.loads(f.subscribe("heartbeat")) == {"event": "subscribe", "feed": "heartbeat"}
    with pytest.raises(ConfigError):
        f.subscribe("book", [])
    with pytest.raises(ConfigError):
        f.subscribe("fills", ["PF_XBTUSD"])
    assert KrakenFutures.keepalive.must_send_within == 60.0
    assert KrakenFutures.keepalive.client_ping_interval < 60.0


@pytest.mark.parametrize("raw,kind,channel,symbol", [
    (INFO, Kind.INFO, None, None),
    (SUBSCRIBED, Kind.ACK, "book", "PF_XBTUSD"),
    (UNSUBSCRIBED, Kind.UNSUBSCRIBED, "trade", "PF_ETHUSD"),
    (ERROR, Kind.ERROR, None, None),
    (ALERT, Kind.ERROR, None, None),
    (HEARTBEAT, Kind.HEARTBEAT, "heartbeat", None),
    (BOOK_SNAPSHOT, Kind.DATA, "book", "PF_XBTUSD"),
    (BOOK_DELTA, Kind.DATA, "book", "PF_XBTUSD"),
    (TRADE_SNAPSHOT, Kind.DATA, "trade", "PF_XBTUSD"),
    (TRADE, Kind.DATA, "trade", "PF_XBTUSD"),
    (TICKER, Kind.DATA, "ticker", "PF_XBTUSD"),
])
def test_classify(raw, kind, channel, symbol):
    c = kf.classify(raw)
    assert (c.kind, c.channel, c.symbol) == (kind, channel, symbol)


def test_error_detail():
    assert kf.classify(ERROR).detail == "Invalid product id"
    assert kf.classify(INFO).detail == "info"


def test_route():
    assert kf.route(BOOK_SNAPSHOT) == RouteKey("book", "PF_XBTUSD")
    assert kf.route(BOOK_DELTA) == RouteKey("book", "PF_XBTUSD")
    assert kf.route(TICKER) == RouteKey("ticker", "PF_XBTUSD")
    assert kf.route(TRADE_SNAPSHOT) == RouteKey("trade", "PF_XBTUSD")
    for raw in (INFO, SUBSCRIBED, ERROR, HEARTBEAT, b"", b"garbage", b'{"feed":"book"}'):
        assert kf.route(raw) is None


def test_sequence_book_only():
    assert kf.sequence(BOOK_SNAPSHOT) == SeqInfo(("book", "PF_XBTUSD"), 326072249, True, "PF_XBTUSD")
    assert kf.sequence(BOOK_DELTA) == SeqInfo(("book", "PF_XBTUSD"), 326072250, False, "PF_XBTUSD")
    for raw in (TRADE, TICKER, HEARTBEAT, SUBSCRIBED, b"{", b"\xff"):
        assert kf.sequence(raw) is None


def test_gap_detection_over_frames():
    def delta(seq: int, pid: str = "PF_XBTUSD") -> bytes:
        return (b'{"feed":"book","product_id":"%s","side":"buy","seq":%d,"price":1.0,"qty":2.0,'
                b'"timestamp":1612269953629}' % (pid.encode(), seq))

    g = GapDetector()
    frames = [BOOK_SNAPSHOT, delta(326072250), delta(326072251), delta(326072254),
              delta(326072255), delta(5, "PF_ETHUSD"), delta(6, "PF_ETHUSD")]
    gaps = [gap for f in frames if (gap := g.feed_info(kf.sequence(f))) is not None]
    assert len(gaps) == 1
    assert (gaps[0].stream_key, gaps[0].expected, gaps[0].got) == (("book", "PF_XBTUSD"),
                                                                   326072252, 326072254)


def test_timestamps():
    assert kf.exchange_ts_ns(BOOK_DELTA) == 1612269953629 * 1_000_000
    assert kf.exchange_ts_ns(TICKER) == 1612270825335 * 1_000_000
    assert kf.exchange_ts_ns(HEARTBEAT) == 1534262350627 * 1_000_000
    assert kf.exchange_ts_ns(INFO) is None


@pytest.mark.parametrize("raw", [b"", b"x", b"{", b'{"event":', b"[]", b'{"feed":1}', b"\x80\x81"])
def test_malformed(raw):
    assert kf.classify(raw).kind in (Kind.MALFORMED, Kind.UNKNOWN)
    assert kf.route(raw) is None
    assert kf.sequence(raw) is None
