"""One sequence-gap rule: the connection's hot path (the rule inlined for
book frames in the documented layout) and its fallback (frames in any other
layout, through ``GapDetector.feed``) give exactly the reports of
``GapDetector.feed`` itself, for every short sequence of numbers and
snapshots on one or two streams, in either layout or mixed."""
from __future__ import annotations

import itertools
import os

import orjson
import pytest

import ring
from capture.receiver.connection import Connection
from capture.receiver.repair import Integrity
from capture.venues import Kalshi, KrakenFutures
from capture.venues.base import GapDetector
from receiver_helpers import cleanup, make_ring_dir


def _kalshi(stream: int, seq: int, snap: bool, odd: bool) -> bytes:
    typ = "orderbook_snapshot" if snap else "orderbook_delta"
    body = {"type": typ, "sid": stream, "seq": seq, "msg": {"market_ticker": f"M{stream}"}}
    if odd:   # keys in another order: the head match fails, the venue module decides
        body = dict(reversed(list(body.items())))
    return orjson.dumps(body)


def _futures(stream: int, seq: int, snap: bool, odd: bool) -> bytes:
    body = {"feed": "book_snapshot" if snap else "book", "product_id": f"PF_X{stream}",
            "side": "buy", "seq": seq, "price": 1.5, "qty": 2.0, "timestamp": 1}
    if odd:
        body = dict(reversed(list(body.items())))
    return orjson.dumps(body)


VENUES = {"kalshi": (Kalshi, _kalshi), "kraken_futures": (KrakenFutures, _futures)}
SEQS = (1, 2, 3, 5)


@pytest.fixture
def producer():
    d = make_ring_dir()
    p = os.path.join(d, "rule.ring")
    ring.create(p, 4 << 20).close()
    with ring.Producer(p) as prod:   # no readers: writes never refuse
        yield prod
    cleanup(d)


def _cases():
    """Every sequence of 3 events on two streams, and of 4 on one stream
    (event: stream, seq in SEQS, snapshot or not)."""
    two = [(s, q, snap) for s in (1, 2) for q in SEQS for snap in (False, True)]
    one = [(1, q, snap) for q in SEQS for snap in (False, True)]
    yield from itertools.product(two, repeat=3)
    yield from itertools.product(one, repeat=4)


@pytest.mark.parametrize("layout", ["documented", "odd", "mixed"])
@pytest.mark.parametrize("venue", sorted(VENUES))
def test_hot_path_and_gap_detector_agree_on_every_short_sequence(producer, venue, layout):
    cls, frame = VENUES[venue]
    conn = Connection(producer, 0, f"{venue}-0", cls, "ws://127.0.0.1:9/", ["M1"],
                      transport="websockets", integrity=Integrity(venue))
    checks = conn.checks
    scan = checks.scanner
    assert scan is not None and conn._seq_match is not None
    got: list[tuple] = []
    # what the connection reports: (stream key, expected, got) for each break
    checks.gap = lambda raw, key, expected, seq: got.append((key, expected, seq))
    cases = 0
    hot = 0
    for events in _cases():
        checks.fresh()
        got.clear()
        ref = GapDetector()
        want = []
        for i, (stream, seq, snap) in enumerate(events):
            odd = layout == "odd" or (layout == "mixed" and i % 2 == 1)
            raw = frame(stream, seq, snap, odd)
            info = cls.sequence(raw)            # the venue module: the reference reading
            assert info is not None and (info.seq, info.snapshot) == (seq, snap)
            m = conn._seq_match(raw)
            hot += m is not None and m.group(3) is not None
            conn._on_message(raw, 1, 0)
            key = scan.fallback(raw)[0]         # the stream's key bytes
            g = ref.feed(key, seq, snap)
            if g is not None:
                want.append((g.stream_key, g.expected, g.got))
        assert got == want, events
        assert checks.detector.table == ref.table, events
        cases += 1
    assert cases == 16 ** 3 + 8 ** 4
    assert conn.errors == 0
    # the layouts took the paths they are meant to test
    if layout == "documented":
        assert hot == 3 * 16 ** 3 + 4 * 8 ** 4
    elif layout == "odd":
        assert hot == 0
    else:
        assert 0 < hot < 3 * 16 ** 3 + 4 * 8 ** 4
