"""Polymarket subscription planning (sans-I/O): no acks, the initial
message once per connection, then operation subscribe."""
from __future__ import annotations

import orjson

from capture.venues import Polymarket


def test_initial_message_once_per_connection_then_subscribe():
    s = Polymarket.subscriber(Polymarket, {})
    assert not s.acks
    first = s.subscribe(["t1", "t2"])
    later = s.subscribe(["t3"])
    assert orjson.loads(first[0].payload)["type"] == "market"
    assert orjson.loads(later[0].payload)["operation"] == "subscribe"
    assert all(r.pending == set() for r in first + later)
    s.fresh()
    assert orjson.loads(s.subscribe(["t3"])[0].payload)["type"] == "market"
    assert s.repair("t1") == ("", [], [])


def test_requests_chunked_by_the_venue_limit():
    s = Polymarket.subscriber(Polymarket, {})
    n = Polymarket.per_connection   # the default cap (a margin below the venue's ~500)
    reqs = s.subscribe([f"t{i}" for i in range(n + 1)])
    assert [len(r.symbols) for r in reqs] == [n, 1]
