"""Kraken spot v2 book checksum: exact digits, known answers, book upkeep."""
from __future__ import annotations

import zlib
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capture.venues.kraken.checksum import Book, BookFormatError, Books, checksum, digits, parse_book_frame

# CRC-32's standard check value: crc32(b"123456789") == 0xCBF43926.
CHECK_VALUE = 0xCBF43926


def test_digits():
    assert digits("0.10000000") == "10000000"
    assert digits("0.00012300") == "12300"
    assert digits("1234.5") == "12345"
    assert digits("00042") == "42"
    assert digits("100") == "100"
    with pytest.raises(BookFormatError):
        digits("1e-05")


def test_known_answer_crc_check_value():
    # asks then bids, price then qty: "12" "34" "56" "789" -> "123456789".
    assert checksum([("1.2", "3.4")], [("5.6", "789")]) == CHECK_VALUE
    # Leading zeros (before and after the point) are stripped.
    assert checksum([("0.012", "00.34")], [("05.6", "0.789")]) == CHECK_VALUE


def test_known_answer_trailing_zeros():
    asks = [("0.05005", "0.00000500"), ("0.05010", "1.00000000")]
    bids = [("0.05000", "10.00000000"), ("0.04990", "0.10000000")]
    by_hand = b"5005" b"500" b"5010" b"100000000" b"5000" b"1000000000" b"4990" b"10000000"
    assert checksum(asks, bids) == zlib.crc32(by_hand)
    # What a float round trip would produce is different: the zeros matter.
    floats = [(repr(float(p)), repr(float(q))) for p, q in bids]   # '0.1', '10.0', ...
    assert checksum([], floats) != checksum([], bids)


def test_only_top_ten_levels_count():
    asks = [(f"{100 + i}.0", "1.0") for i in range(15)]
    bids = [(f"{99 - i}.0", "2.0") for i in range(15)]
    text = "".join(f"{100 + i}010" for i in range(10)) + "".join(f"{99 - i}020" for i in range(10))
    assert checksum(asks, bids) == zlib.crc32(text.encode())


def _frame(kind: str, symbol: str, bids, asks, cs: int | None, numbers: bool = True) -> bytes:
    """A Kraken v2 book frame; numbers written as JSON numbers with exact digits."""
    def lv(levels):
        if numbers:
            return "[" + ",".join('{"price":%s,"qty":%s}' % (p, q) for p, q in levels) + "]"
        return orjson.dumps([{"price": p, "qty": q} for p, q in levels]).decode()
    item = '{"symbol":"%s","bids":%s,"asks":%s%s,"timestamp":"2023-10-06T17:35:55.440295Z"}' % (
        symbol, lv(bids), lv(asks), "" if cs is None else ',"checksum":%d' % cs)
    return ('{"channel":"book","type":"%s","data":[%s]}' % (kind, item)).encode()


def test_parse_keeps_exact_number_text():
    raw = _frame("snapshot", "BTC/USD", [("0.10000000", "5.00")], [("0.20000000", "1")], 7)
    (item,) = parse_book_frame(raw)
    assert item.bids == (("0.10000000", "5.00"),) and item.asks == (("0.20000000", "1"),)
    assert item.checksum == 7 and item.snapshot
    (item,) = parse_book_frame(_frame("update", "X", [("0.1", "2")], [], None, numbers=False))
    assert item.bids == (("0.1", "2"),) and item.checksum is None and not item.snapshot
    assert parse_book_frame(b'{"channel":"heartbeat"}') is None
    assert parse_book_frame(b"garbage") is None
    with pytest.raises(BookFormatError):
        parse_book_frame(b'{"channel":"book","type":"update","data":[{"symbol":"X","bids":[{"p":1}]}]}')


def test_book_orders_sides_and_applies_updates():
    b = Book("X", depth=10)
    b.snapshot(bids=[("1.00", "1"), ("3.00", "1"), ("2.00", "1")],
               asks=[("6.00", "1"), ("4.00", "1"), ("5.00", "1")])
    bids, asks = b.top()
    assert [p for p, _ in bids] == ["3.00", "2.00", "1.00"]
    assert [p for p, _ in asks] == ["4.00", "5.00", "6.00"]
    b.update(bids=[("2.0", "0")], asks=[("4.0", "7.50")])   # delete; replace with new text
    bids, asks = b.top()
    assert bids == [("3.00", "1"), ("1.00", "1")]
    assert asks[0] == ("4.0", "7.50")
    assert b.checksum() == zlib.crc32(b"40750" b"5001" b"6001" b"3001" b"1001")
    b.update(bids=[("9.99", "0")], asks=[])                  # deleting an absent level is fine
    assert len(b.bids) == 2


def test_book_truncates_to_depth_after_update():
    b = Book("X", depth=10)
    b.snapshot(bids=[(f"{i}.0", "1") for i in range(1, 11)], asks=[(f"{i}.0", "1") for i in range(20, 30)])
    b.update(bids=[("10.5", "2")], asks=[("19.5", "2")])
    bids, asks = b.top(20)
    assert len(bids) == len(asks) == 10
    assert bids[0] == ("10.5", "2") and ("1.0", "1") not in bids
    assert asks[0] == ("19.5", "2") and ("29.0", "1") not in asks


def test_books_feed_detects_corruption_once():
    bids = [("0.5666", "4831.75496356"), ("0.5665", "0.10000000")]
    asks = [("0.5668", "4410.79769455"), ("0.5669", "1.00000000")]
    good = checksum(asks, bids)
    books = Books(depth=10)
    (r,) = books.feed(_frame("snapshot", "MATIC/USD", bids, asks, good))
    assert r.ok and r.computed == good

    upd = [("0.5667", "2.00000000")]
    good2 = checksum(asks, upd + bids)
    (r,) = books.feed(_frame("update", "MATIC/USD", upd, [], good2))
    assert r.ok

    (r,) = books.feed(_frame("update", "MATIC/USD", [("0.5664", "1.00000000")], [], 12345))
    assert not r.ok and (r.expected, r.symbol) == (12345, "MATIC/USD")
    # Book dropped until the resubscription's snapshot: no second report.
    (r,) = books.feed(_frame("update", "MATIC/USD", [("0.5663", "1.0")], [], 1))
    assert r.ok and r.computed is None
    (r,) = books.feed(_frame("snapshot", "MATIC/USD", bids, asks, good))
    assert r.ok and r.computed == good
    assert books.feed(b'{"channel":"ticker","data":[]}') == []


def test_books_other_symbols_untouched():
    books = Books()
    a = [("1.0", "1.0")]
    books.feed(_frame("snapshot", "A/USD", a, [("2.0", "1.0")], checksum([("2.0", "1.0")], a)))
    books.feed(_frame("snapshot", "B/USD", a, [("3.0", "1.0")], checksum([("3.0", "1.0")], a)))
    (bad,) = books.feed(_frame("update", "A/USD", [("1.5", "1.0")], [], 0))
    assert not bad.ok
    (ok,) = books.feed(_frame("update", "B/USD", [("1.5", "1.0")], [],
                              checksum([("3.0", "1.0")], [("1.5", "1.0")] + a)))
    assert ok.ok and ok.computed is not None


# -- property: the book agrees with a naive model --------------------------------

prices = st.integers(min_value=1, max_value=400).map(lambda n: f"{n / 100:.2f}0")
qtys = st.one_of(st.just("0.00000000"),
                 st.integers(min_value=1, max_value=10**9).map(lambda n: f"{n / 10**8:.8f}"))
levels = st.lists(st.tuples(prices, qtys), max_size=12)


def _model_top(model: dict[Decimal, tuple[str, str]], reverse: bool, depth: int):
    keys = sorted(model, reverse=reverse)
    for k in keys[depth:]:
        del model[k]
    return [model[k] for k in keys[:depth]]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(levels, levels), min_size=1, max_size=12))
def test_book_matches_naive_model(ops):
    depth = 10
    book = Book("X", depth)
    mb: dict[Decimal, tuple[str, str]] = {}
    ma: dict[Decimal, tuple[str, str]] = {}
    for n, (bids, asks) in enumerate(ops):
        if n == 0:
            book.snapshot(bids, asks)
        else:
            book.update(bids, asks)
        for model, side in ((mb, bids), (ma, asks)):
            for p, q in side:
                if Decimal(q) == 0:
                    model.pop(Decimal(p), None)
                else:
                    model[Decimal(p)] = (p, q)
        tb = _model_top(mb, True, depth)
        ta = _model_top(ma, False, depth)
        assert book.top(depth) == (tb, ta)
        text = "".join(digits(p) + digits(q) for p, q in ta[:10] + tb[:10])
        assert book.checksum() == zlib.crc32(text.encode())


# -- cross-check with the simulator's independent implementation ------------------

def test_agrees_with_simulator_books():
    """Books the simulator builds (fixed precision, trailing zeros, depth
    truncation) validate here; its injected corruptions are each caught once."""
    sim = pytest.importorskip("capture.simulator.kraken")
    universe = pytest.importorskip("capture.simulator.universe")
    try:
        pair = universe.KrakenPair(symbol="DOGE/USD", wsname="XDG/USD", key="XDGUSD",
                                   altname="XDGUSD", base="XXDG", quote="ZUSD", price_decimals=7,
                                   qty_decimals=8, mid=1_000_000, status="online")
        book = sim.Book(pair, depth=10, seed=7, num=sim._Num(as_strings=False), corrupt_every=37)
    except (TypeError, AttributeError) as exc:  # simulator internals moved: not our contract
        pytest.skip(f"simulator Book API changed: {exc}")
    books = Books(depth=10)
    results = books.feed(book.snapshot())
    for n in range(1, 600):
        rs = books.feed(book.update(1_700_000_000_000_000_000 + n))
        results += rs
        if not all(r.ok for r in rs):          # the repair: resubscribe -> fresh snapshot
            results += books.feed(book.snapshot())
    assert all(r.computed is not None for r in results)
    bad = [r for r in results if not r.ok]
    # Exactly the checksums the simulator corrupted (every 37th it sent), no others.
    assert len(bad) == book.sent // 37 > 10


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(prices, qtys), max_size=14), st.lists(st.tuples(prices, qtys), max_size=14))
def test_agrees_with_simulator_function(asks, bids):
    sim = pytest.importorskip("capture.simulator.kraken")
    if not hasattr(sim, "book_checksum"):
        pytest.skip("simulator has no book_checksum")
    assert checksum(asks, bids) == sim.book_checksum(asks, bids)
