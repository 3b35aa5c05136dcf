"""Kalshi subscription planning (sans-I/O): order books one market per sid,
other channels one sid each, additions through update_subscription, the
get_snapshot repair."""
from __future__ import annotations

import orjson

from capture.venues import Kalshi


def _sub(**options):
    return Kalshi.subscriber(Kalshi, options)


def test_books_one_market_per_sid_and_the_rest_one_request_per_channel():
    s = _sub()
    reqs = s.subscribe(["M1", "M2"])
    assert [(r.channel, r.symbols, r.req_id) for r in reqs] == [
        ("orderbook_delta", ("M1",), 1), ("orderbook_delta", ("M2",), 2),
        ("trade", ("M1", "M2"), 3), ("ticker", ("M1", "M2"), 4)]
    assert all(r.pending == {(r.channel, "*")} for r in reqs)
    assert s.auth_error_code == Kalshi.auth_error_code == 9


def test_acks_keep_the_sids_and_later_additions_update_the_subscription():
    s = _sub(channels=["orderbook_delta", "trade"])
    book, trade = s.subscribe(["M1"])
    s.acked(book, 7, "orderbook_delta")
    s.acked(trade, 8, "trade")
    assert s.symbol_of(7) == "M1" and s.symbol_of(8) is None
    later = s.subscribe(["M2"])
    upd = orjson.loads(later[1].payload)
    assert (upd["cmd"], upd["params"]["sid"], upd["params"]["action"]) == \
        ("update_subscription", 8, "add_markets")
    assert later[1].pending == set()          # an update is not acked like a subscribe


def test_repair_is_get_snapshot_on_the_markets_sid():
    s = _sub()
    book = s.subscribe(["M1"])[0]
    assert s.repair("M1") == ("", [], [])     # no sid yet: nothing to repair with
    s.acked(book, 5, "orderbook_delta")
    action, unsubs, (req,) = s.repair("M1", 5)
    body = orjson.loads(req.payload)
    assert (action, unsubs) == ("get_snapshot", [])
    assert (body["params"]["sid"], body["params"]["action"]) == (5, "get_snapshot")
    s.fresh()
    assert s.symbol_of(5) is None             # a new connection: sids start again
