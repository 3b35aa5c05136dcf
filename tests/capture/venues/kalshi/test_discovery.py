"""Kalshi discovery: market pages by cursor, parsed and fetched."""
from __future__ import annotations

import asyncio

import orjson
import pytest

from capture.venues import get
from capture.venues.discovery import BadPage
from capture.venues.kalshi import discovery as kalshi
from discovery_helpers import FAST

def test_kalshi_page():
    body = {"markets": [{"ticker": "A", "event_ticker": "E", "status": "active"},
                        {"ticker": "B"}, {"ticker": "A"}, {"nope": 1}], "cursor": ""}
    markets, cursor = kalshi.parse_kalshi_page(orjson.dumps(body))
    assert cursor is None
    assert [(m.ticker, m.event_ticker, m.status) for m in kalshi.kalshi_markets(markets)] == [
        ("A", "E", "active"), ("B", None, None)]
    with pytest.raises(BadPage):
        kalshi.parse_kalshi_page(b'{"cursor":"x"}')

def test_kalshi_cursor_loop(server):
    base, script = server
    q = "/trade-api/v2/markets?limit=2&status=open"
    script.add(q, (200, b'{"markets":[{"ticker":"A"},{"ticker":"B"}],"cursor":"x1"}'))
    script.add(q + "&cursor=x1", (500, b""), (200, b'{"markets":[{"ticker":"C"}],"cursor":"x2"}'))
    script.add(q + "&cursor=x2", (200, b'{"markets":[],"cursor":""}'))
    got = asyncio.run(kalshi.fetch_kalshi_markets(base + "/trade-api/v2", limit=2, policy=FAST))
    assert [m.ticker for m in got] == ["A", "B", "C"]


def test_discover_trait_gives_one_unit_per_open_market(server):
    base, script = server
    script.add("/trade-api/v2/markets?limit=1000&status=open",
               (200, b'{"markets":[{"ticker":"A"},{"ticker":"B"},{"ticker":"A"}],"cursor":""}'))
    units = asyncio.run(get("kalshi").discover(base + get("kalshi").rest_path))
    assert units == [("A", ("A",)), ("B", ("B",))]
