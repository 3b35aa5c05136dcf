"""Kraken Futures discovery: the instruments list, parsed and fetched."""
from __future__ import annotations

import asyncio

import orjson
import pytest

from capture.venues import get
from capture.venues.discovery import BadPage
from capture.venues.kraken_futures import discovery as futures
from discovery_helpers import FAST

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

def test_futures_fetch(server):
    base, script = server
    script.add("/derivatives/api/v3/instruments",
               (200, b'{"result":"success","instruments":[{"symbol":"PF_XBTUSD","tradeable":true}]}'))
    got = asyncio.run(futures.fetch_futures_instruments(base + "/derivatives/api/v3", policy=FAST))
    assert [i.symbol for i in got] == ["PF_XBTUSD"]


def test_discover_trait_gives_one_unit_per_tradeable_product(server):
    base, script = server
    script.add("/derivatives/api/v3/instruments",
               (200, b'{"result":"success","instruments":[{"symbol":"pf_b"},{"symbol":"PF_A"}]}'))
    units = asyncio.run(get("kraken_futures").discover(base + get("kraken_futures").rest_path))
    assert units == [("PF_A", ("PF_A",)), ("PF_B", ("PF_B",))]
