"""Kraken spot subscription planning (sans-I/O): requests per channel,
acks awaited per symbol, the book repair, rate-limit refusals."""
from __future__ import annotations

import orjson

from capture.venues import KrakenSpot


def _sub(**options):
    return KrakenSpot.subscriber(KrakenSpot, options)


def test_one_request_per_channel_awaiting_one_ack_per_symbol():
    reqs = _sub(channels=["book", "trade"], depth=25).subscribe(["BTC/USD", "ETH/USD"])
    assert [(r.channel, r.symbols, r.req_id) for r in reqs] == [
        ("book", ("BTC/USD", "ETH/USD"), 1), ("trade", ("BTC/USD", "ETH/USD"), 2)]
    assert reqs[0].pending == {("book", "BTC/USD"), ("book", "ETH/USD")}
    book = orjson.loads(reqs[0].payload)
    assert (book["method"], book["params"]["depth"], book["req_id"]) == ("subscribe", 25, 1)


def test_default_channels_are_the_venue_trait_and_chunks_of_250():
    s = _sub()
    syms = [f"S{i}/USD" for i in range(260)]
    reqs = s.subscribe(syms)
    assert [r.channel for r in reqs] == [c for c in KrakenSpot.default_channels for _ in (1, 2)]
    assert [len(r.symbols) for r in reqs[:2]] == [250, 10]


def test_book_repair_is_unsubscribe_then_subscribe_with_snapshot():
    s = _sub(channels=["book", "trade"])
    action, unsubs, reqs = s.repair("BTC/USD")
    assert action == "resubscribe"
    (channel, payload), = unsubs
    assert channel == "book" and orjson.loads(payload)["method"] == "unsubscribe"
    (req,) = reqs
    body = orjson.loads(req.payload)
    assert body["params"]["snapshot"] is True and req.pending == {("book", "BTC/USD")}
    assert _sub(channels=["trade"]).repair("BTC/USD") == ("", [], [])


def test_rate_limit_refusals_are_recognised():
    s = _sub()
    assert s.rate_limited("Exceeded msg rate")
    assert not s.rate_limited("Currency pair not supported") and not s.rate_limited(None)
    assert orjson.loads(s.app_ping())["method"] == "ping"
