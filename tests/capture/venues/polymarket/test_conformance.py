"""Polymarket market channel against its documentation (and the plain-text
forms reported from the live venue), the initial multi-market dump, and a
Gamma page."""
from __future__ import annotations

import orjson
import pytest

import conformance
from capture.venues import fanout_fn, subject_fn
from capture.receiver.process import ReceiverConfig
from capture.venues.polymarket.subscriber import PolymarketSubscriber
from capture.venues.polymarket import protocol as pm
from capture.venues.polymarket.discovery import gamma_markets, parse_gamma_page

CASES = conformance.messages("polymarket", "ws_market.json")
DOC = conformance.load("polymarket", "ws_market.json")


@pytest.mark.parametrize("name,raw,expect", CASES, ids=conformance.ids(CASES))
def test_documented_frame(name, raw, expect):
    c = pm.classify(raw)
    assert c.kind.value == expect["kind"]
    for field in ("channel", "symbol", "detail"):
        if field in expect:
            assert getattr(c, field) == expect[field], field
    rk = pm.route(raw)
    assert (list(rk) if rk else None) == expect["route"]
    if "ts_ns" in expect:
        assert pm.exchange_ts_ns(raw) == expect["ts_ns"]


def test_initial_dump_routes_every_event_to_its_market():
    events = DOC["initial_dump"]["events"]
    raw = orjson.dumps(events)
    split = pm.split_events(raw)
    assert split is not None
    assert [(k.channel, k.symbol) for k, _ in split] == [("book", e["market"]) for e in events]
    # each piece is exactly its event, and routes by itself to its own subject
    fn = subject_fn("md", "polymarket", shard=0)
    for (key, piece), ev in zip(split, events):
        assert orjson.loads(piece) == ev
        assert pm.route(piece) == key
        assert fn(piece).endswith(ev["market"])
    # the frame itself still has one (first-event) route: disk bytes unchanged
    assert pm.route(raw).symbol == events[0]["market"]


def test_split_leaves_single_route_frames_alone():
    ev = DOC["initial_dump"]["events"][0]
    assert pm.split_events(orjson.dumps([ev, ev])) is None
    assert pm.split_events(orjson.dumps(ev)) is None
    assert pm.split_events(b"[]") is None
    assert pm.split_events(b"[{not json") is None
    assert pm.split_events(b"NO NEW ASSETS") is None


def test_no_new_assets_is_not_a_venue_error():
    c = pm.classify(b"NO NEW ASSETS")
    assert c.kind is pm.Kind.INFO
    assert pm.classify(b"INVALID OPERATION").kind is pm.Kind.ERROR


def test_token_cap_has_a_margin_and_is_configurable():
    assert pm.Polymarket.per_connection < pm.MAX_TOKENS_PER_CONNECTION
    p = pm.Polymarket()
    assert p.max_tokens == pm.DEFAULT_TOKENS_PER_CONNECTION
    ids = [str(i) for i in range(p.max_tokens + 1)]
    with pytest.raises(pm.ConfigError):
        p.initial(ids)
    assert b'"assets_ids"' in pm.Polymarket(max_tokens=500).initial(ids)
    for bad in (0, 501):
        with pytest.raises(pm.ConfigError, match="per connection"):
            pm.Polymarket(max_tokens=bad)


def test_gamma_page():
    doc = conformance.load("polymarket", "gamma_keyset.json")
    markets, cursor = parse_gamma_page(orjson.dumps(doc["page"]))
    assert cursor == doc["expect"]["cursor"]
    got = gamma_markets(markets)
    assert [m.condition_id for m in got] == doc["expect"]["markets"]
    assert list(got[0].token_ids) == doc["expect"]["tokens"]


def test_a_configured_cap_above_the_venue_ceiling_is_refused():
    ok = ReceiverConfig(ring="/nonexistent/r", venue="polymarket", symbols=["1"], per_connection=500)
    ok.validate()
    assert ReceiverConfig(ring="r", venue="polymarket", symbols=["1"]).capacity == \
        pm.DEFAULT_TOKENS_PER_CONNECTION
    with pytest.raises(pm.ConfigError, match="per_connection|500"):
        ReceiverConfig(ring="r", venue="polymarket", symbols=["1"], per_connection=501).validate()
    # the subscriber chunks by the configured cap, not by the default
    sub = PolymarketSubscriber(pm.Polymarket, {"max_tokens": 480})
    reqs = sub.subscribe([str(i) for i in range(960)])
    assert [len(r.symbols) for r in reqs] == [480, 480]


def test_fanout_gives_each_event_of_the_dump_its_market_subject():
    events = DOC["initial_dump"]["events"]
    raw = orjson.dumps(events)
    fan = fanout_fn("md", "polymarket")
    one = subject_fn("md", "polymarket", shard=0)
    out = fan(raw)
    assert [s for s, _ in out] == [one(orjson.dumps(e)) for e in events]
    assert len({s for s, _ in out}) == len(events)
    for name, frame, _ in CASES:        # single-event frames: no fan-out
        assert fan(frame) is None, name
    assert fanout_fn("md", "kraken")(raw) is None


def test_fanout_keeps_an_element_without_a_route():
    """An array element that names no market is not dropped from the bus: it
    goes, in its place, to the unrouted subject."""
    events = DOC["initial_dump"]["events"][:2]
    raw = orjson.dumps([events[0], {"event_type": "book"}, 7, events[1]])
    out = fanout_fn("md", "polymarket")(raw)
    assert [s for s, _ in out] == [
        f"md.polymarket.book.{events[0]['market']}", "md.polymarket.unrouted",
        "md.polymarket.unrouted", f"md.polymarket.book.{events[1]['market']}"]
    assert [orjson.loads(b) for _, b in out] == [events[0], {"event_type": "book"}, 7, events[1]]
    # unroutable elements alone do not make a frame split
    assert pm.split_events(orjson.dumps([events[0], 7])) is None
