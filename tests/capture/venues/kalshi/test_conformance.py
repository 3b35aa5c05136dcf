"""Kalshi WS v2 against its documentation: replies (with and without seq),
the error codes that end a subscription or refuse for rate, book frames,
ts / ts_ms, and the markets REST page."""
from __future__ import annotations

import pytest

import conformance
from capture.venues.base import GapDetector
from capture.venues.kalshi import protocol as kalshi
from capture.venues.kalshi.protocol import Kalshi
from capture.venues.kalshi.discovery import kalshi_markets, parse_kalshi_page
import orjson

CASES = conformance.messages("kalshi", "ws_v2.json")
DOC = conformance.load("kalshi", "ws_v2.json")


@pytest.mark.parametrize("name,raw,expect", CASES, ids=conformance.ids(CASES))
def test_documented_frame(name, raw, expect):
    c = kalshi.classify(raw)
    assert c.kind.value == expect["kind"]
    for field in ("channel", "symbol", "req_id", "sid", "code"):
        if field in expect:
            assert getattr(c, field) == expect[field], field
    rk = kalshi.route(raw)
    assert (list(rk) if rk else None) == expect["route"]
    info = kalshi.sequence(raw)
    if "seq" in expect:
        want = expect["seq"]
        assert (None if info is None else [info.stream_key, info.seq, info.snapshot]) == want
    if "ts_ns" in expect:
        assert kalshi.exchange_ts_ns(raw) == expect["ts_ns"]
    if "terminal" in expect:
        assert Kalshi.terminal_error(c) is expect["terminal"]
        assert Kalshi.too_many_requests(c) is expect["too_many"]


def test_replies_carrying_seq_keep_the_numbering_whole():
    """delta 3, ok 4, delta 5 on one sid: no gap once the reply is fed."""
    frames = [b'{"type":"orderbook_snapshot","sid":456,"seq":1,"msg":{"market_ticker":"A"}}',
              b'{"type":"orderbook_delta","sid":456,"seq":2,"msg":{"market_ticker":"A"}}',
              b'{"id":123,"sid":456,"seq":3,"type":"ok","msg":{"market_tickers":["B"]}}',
              b'{"type":"orderbook_delta","sid":456,"seq":4,"msg":{"market_ticker":"A"}}',
              b'{"id":124,"sid":456,"seq":5,"type":"unsubscribed"}']
    d = GapDetector()
    assert [d.feed_info(kalshi.sequence(f)) for f in frames] == [None] * 5
    # Skipping the reply (the old reading) gives the false gap 3 -> 4.
    old = GapDetector()
    gaps = [old.feed_info(kalshi.sequence(f)) for f in frames if b'"type":"orderbook_' in f]
    assert [(g.expected, g.got) for g in gaps if g] == [(3, 4)]


def test_ts_ms_preferred_over_ts():
    both = b'{"type":"ticker","sid":1,"msg":{"market_ticker":"A","ts":1669149841,"ts_ms":1669149841999}}'
    assert kalshi.exchange_ts_ns(both) == 1669149841999 * 1_000_000


def test_default_host_is_the_documented_one():
    hosts = DOC["hosts"]
    assert Kalshi.url == hosts["documented_default"]
    assert Kalshi.demo_url == hosts["documented_demo"]


def test_markets_page():
    doc = conformance.load("kalshi", "markets_page.json")
    markets, cursor = parse_kalshi_page(orjson.dumps(doc["page"]))
    assert cursor == doc["expect"]["cursor"]
    assert [m.ticker for m in kalshi_markets(markets)] == doc["expect"]["tickers"]
    last, end = parse_kalshi_page(orjson.dumps(doc["last_page"]))
    assert last == [] and end is None
