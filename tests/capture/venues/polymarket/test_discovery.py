"""Polymarket discovery: Gamma keyset pages, parsed and fetched."""
from __future__ import annotations

import asyncio

import orjson
import pytest

from capture.venues import get
from capture.venues.discovery import BadPage, DiscoveryError
from capture.venues.polymarket import discovery as polymarket
from discovery_helpers import FAST

def _gm(cid, tokens, active=True, closed=False, **kw):
    return {"conditionId": cid, "clobTokenIds": orjson.dumps(tokens).decode(),
            "outcomes": '["Yes", "No"]', "active": active, "closed": closed, **kw}

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


def test_discover_trait_gives_one_unit_per_market(server):
    base, script = server
    script.add("/markets/keyset?limit=100&active=true&closed=false", (200, _gamma_page(0, 2, None)))
    units = asyncio.run(get("polymarket").discover(base))
    assert units == [("0x0", ("01", "02")), ("0x1", ("11", "12"))]
