"""Kraken Futures v1 against its documentation: control frames, book
snapshot and delta with their seq, and the instruments listing."""
from __future__ import annotations

import orjson
import pytest

import conformance
from capture.venues.kraken_futures import protocol as kf
from capture.venues.kraken_futures.discovery import parse_futures_instruments

CASES = conformance.messages("kraken_futures", "ws_v1.json")
DOC = conformance.load("kraken_futures", "ws_v1.json")


@pytest.mark.parametrize("name,raw,expect", CASES, ids=conformance.ids(CASES))
def test_documented_frame(name, raw, expect):
    c = kf.classify(raw)
    assert c.kind.value == expect["kind"]
    for field in ("channel", "symbol"):
        if field in expect:
            assert getattr(c, field) == expect[field], field
    rk = kf.route(raw)
    assert (list(rk) if rk else None) == expect["route"]
    info = kf.sequence(raw)
    want = expect["seq"]
    assert (None if info is None else [list(info.stream_key), info.seq, info.snapshot]) == want


def test_instruments():
    got = parse_futures_instruments(orjson.dumps(DOC["instruments"]))
    assert [i.symbol for i in got] == DOC["expect_instruments"]
