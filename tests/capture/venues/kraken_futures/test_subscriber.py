"""Kraken Futures subscription planning (sans-I/O)."""
from __future__ import annotations

import orjson

from capture.venues import KrakenFutures


def test_one_request_per_feed_and_the_book_repair():
    s = KrakenFutures.subscriber(KrakenFutures, {"channels": ["book", "trade"]})
    reqs = s.subscribe(["PF_A", "PF_B"])
    assert [(r.channel, r.symbols, r.req_id) for r in reqs] == [
        ("book", ("PF_A", "PF_B"), None), ("trade", ("PF_A", "PF_B"), None)]
    assert reqs[0].pending == {("book", "PF_A"), ("book", "PF_B")}
    action, ((channel, unsub),), (req,) = s.repair("PF_A")
    assert (action, channel, orjson.loads(unsub)["event"]) == ("resubscribe", "book", "unsubscribe")
    assert req.pending == {("book", "PF_A")}
    assert s.symbol_of(("book", "PF_A")) == "PF_A" and s.symbol_of(3) is None
