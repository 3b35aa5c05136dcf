"""Kraken spot v2 against its documentation: every documented frame through
classify / route / exchange_ts_ns, and the documented book checksums."""
from __future__ import annotations

import orjson
import pytest

import conformance
from capture.venues import subject_fn
from flusher.publisher import subjects
from capture.venues.base import rfc3339_to_ns
from capture.venues.kraken import protocol as kraken
from capture.venues.kraken.checksum import Books, digits
from capture.receiver.integrity import Validator, parse_args
from capture.receiver.process import ReceiverConfig
from capture.receiver.repair import ChannelServer
from capture.venues.kraken.subscriber import KrakenSubscriber
from integrity_helpers import cleanup, new_ring
from receiver_helpers import open_ring

CASES = conformance.messages("kraken", "ws_v2.json")
DOC = conformance.load("kraken", "ws_v2.json")


@pytest.mark.parametrize("name,raw,expect", CASES, ids=conformance.ids(CASES))
def test_documented_frame(name, raw, expect):
    c = kraken.classify(raw)
    assert c.kind.value == expect["kind"]
    for field in ("channel", "symbol", "req_id", "detail"):
        if field in expect:
            assert getattr(c, field) == expect[field], field
    rk = kraken.route(raw)
    assert (list(rk) if rk else None) == expect["route"]
    if "ts" in expect:
        want = None if expect["ts"] is None else rfc3339_to_ns(expect["ts"])
        assert kraken.exchange_ts_ns(raw) == want
    if "rate_limited" in expect:
        assert kraken.KrakenSpot.rate_limited(c.detail) is expect["rate_limited"]
        # the receiver's retry rule reads the same list
        sub = KrakenSubscriber(kraken.KrakenSpot, {})
        assert sub.rate_limited(c.detail) is expect["rate_limited"]


def test_every_documented_frame_has_a_subject():
    fn = subject_fn("md", "kraken", shard=0)
    for name, raw, expect in CASES:
        s = fn(raw)
        if expect["route"]:
            assert s == subjects.data_subject("md", "kraken", *expect["route"]), name
        else:
            assert s == "md.kraken.control.shard-0", name


def test_documented_checksums_need_the_pair_precision():
    """The snapshot and the update that follows it, as the book docs print
    them, give the checksums the docs print once each number is read at
    MATIC/USD's precision (4 price, 8 qty decimals): the printed example
    lost trailing zeros (0.566 for 0.5660), which is exactly how a false
    mismatch happens."""
    books = Books(depth=10, precisions={"MATIC/USD": (4, 8)})
    got = []
    for name, raw, expect in CASES:
        if "checksum" in expect:
            results = books.feed(raw)
            assert len(results) == 1, name
            r = results[0]
            assert r.expected == expect["checksum"], name
            got.append((r.computed, r.expected))
    assert len(got) == 2
    assert all(computed == expected for computed, expected in got), got


def test_documented_digit_rule():
    for text, want in DOC["checksum_digits"]["cases"]:
        assert digits(text) == want


def test_documented_example_as_printed_mismatches_without_precision():
    """Read as printed (zeros lost), the snapshot does not checksum: the
    validator would report it; the per-pair opt-out silences that pair."""
    snap = next(raw for _, raw, e in CASES if e.get("checksum") == 2439117997)
    r = Books(depth=10).feed(snap)[0]
    assert r.computed is not None and not r.ok
    assert Books(depth=10, skip={"MATIC/USD"}).feed(snap) == []


def test_opt_out_pair_is_never_reported_others_still_are(tmp_path):
    """The per-pair opt-out, end to end through the validator's API: a
    skipped pair's mismatch is not reported, another pair's is."""
    assert parse_args(["--ring", "r", "--venue", "kraken", "--skip-checksum", "MATIC/USD",
                       "--skip-checksum", "ALGO/USD"]).skip == ["MATIC/USD", "ALGO/USD"]
    d, path = new_ring()
    try:
        prod = open_ring(ReceiverConfig(ring=path, venue="kraken", symbols=["x"]))
        sock = str(tmp_path / "ch.sock")
        server = ChannelServer(sock)
        v = Validator(path, "kraken", 10, socket_path=sock, skip=["MATIC/USD"])
        try:
            snap = next(raw for _, raw, e in CASES if e.get("checksum") == 2439117997)
            assert v.validate(snap) == 0                     # skipped: as printed it mismatches
            other = snap.replace(b"MATIC/USD", b"ALGO/USD")
            assert v.validate(other) == 1
            reports = server.receive()
            assert [r["symbol"] for r in reports] == ["ALGO/USD"]
        finally:
            v.close()
            server.close()
            prod.close()
    finally:
        cleanup(d)


def test_the_fast_route_agrees_with_the_full_scan_on_every_documented_frame():
    """``route`` answers the usual compact layout with one pattern match and
    everything else by the key-by-key scan; on every documented frame, and
    on the same frame re-serialised compactly (the layout the venue sends),
    both must give the same key, and the documented data frames must take
    the fast path (otherwise it would be dead weight)."""
    fast = 0
    for name, raw, expect in CASES:
        for form in (raw, _compact(raw)):
            if form is None:
                continue
            assert kraken.route(form) == kraken._route_scan(form), name
            fast += kraken._DATA_HEAD.match(form) is not None
    assert fast >= sum(1 for _, _, e in CASES if e["route"] and e["route"][1] != "all")


def _compact(raw: bytes) -> bytes | None:
    try:
        return orjson.dumps(orjson.loads(raw))
    except orjson.JSONDecodeError:
        return None
