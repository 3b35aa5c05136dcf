"""Shared pieces: byte scanners, gap detector, timestamps, registry, fuzzing."""
from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import capture.venues as venues
from capture.venues import base
from capture.venues.base import Gap, GapDetector, Kind, Venue
from common.errors import CaptureError, ConfigError


# --------------------------------------------------------------------------- scanners

def test_scan_str_basic_and_whitespace():
    raw = b'{ "a" : "x", "symbol"\n:\t"BTC/USD" }'
    assert base.scan_str(raw, b'"symbol"') == "BTC/USD"
    assert base.scan_str(raw, b'"a"') == "x"
    assert base.scan_str(raw, b'"missing"') is None


def test_scan_skips_values_that_look_like_keys():
    raw = b'{"channel":"symbol","symbol":"ETH/USD"}'
    assert base.scan_str(raw, b'"symbol"') == "ETH/USD"


def test_escaped_quotes_cannot_fake_a_key():
    raw = orjson.dumps({"note": 'say "symbol":"EVIL"', "symbol": "GOOD"})
    assert base.scan_str(raw, b'"symbol"') == "GOOD"
    assert base.scan_str(b'{"s":"a\\"b"}', b'"s"') == 'a"b'
    assert base.scan_str(b'{"s":"a\\u00e9"}', b'"s"') == "a\u00e9"


def test_scan_windows():
    raw = b'{"k":"' + b"v" * 100 + b'"}'
    assert base.scan_str(raw, b'"k"', 0, 107) == "v" * 100     # the pair must fit the window
    assert base.scan_str(raw, b'"k"', 0, 106) is None
    assert base.scan_str(raw, b'"k"', 2) is None
    assert base.value_at(raw, b'"k"', 0, 2) == 5                # value_at bounds the key start
    assert base.value_at(raw, b'"k"', 0, 1) == -1
    assert base.value_at(raw, b'"k"', 2) == -1
    assert base.value_at(b'{"k"  :  1}', b'"k"') == 9
    assert base.value_at(b'{"k":', b'"k"') == -1
    assert base.scan_str(b'{"k":1,"k":"x"}', b'"k"') == "x"     # first *string* value


def test_scan_int():
    assert base.scan_int(b'{"seq":123,"x":1}', b'"seq"') == 123
    assert base.scan_int(b'{"seq":-5}', b'"seq"') == -5
    assert base.scan_int(b'{"seq":"77"}', b'"seq"') == 77
    assert base.scan_int(b'{"seq":1.5}', b'"seq"') is None
    assert base.scan_int(b'{"seq":"7x"}', b'"seq"') is None
    assert base.scan_int(b'{"seq":}', b'"seq"') is None
    assert base.scan_int(b'{"seq":', b'"seq"') is None


def test_scan_head_tail():
    big = b'{"bids":[' + b"1," * 10000 + b'1],"event_type":"book"}'
    assert base.scan_str_head_tail(big, b'"event_type"') == "book"
    assert base.scan_str_head_tail(b'{"event_type":"x"}', b'"event_type"') == "x"
    mid = b'{"a":[' + b"1," * 1000 + b'1],"event_type":"mid","b":[' + b"2," * 1000 + b"2]}"
    assert base.scan_str_head_tail(mid, b'"event_type"') == "mid"
    assert base.scan_str_head_tail(b"{}" * 1000, b'"event_type"') is None


def test_loads_small_bounds():
    assert base.loads_small(b'{"a":1}') == {"a": 1}
    assert base.loads_small(b"{") is None
    assert base.loads_small(b" " * (base.CONTROL_MAX + 1)) is None


# --------------------------------------------------------------------------- gaps

def test_gap_detector_reports_each_gap_once():
    g = GapDetector()
    assert g.feed("a", 10) is None            # baseline
    assert g.feed("a", 11) is None
    gap = g.feed("a", 14)
    assert gap == Gap("a", 12, 14) and gap.missing == 2
    assert g.feed("a", 15) is None            # continues from 14: no repeat
    assert g.feed("b", 1) is None             # streams are independent
    assert g.feed("a", 15) == Gap("a", 16, 15)  # duplicate / regression
    assert g.feed("a", 16) is None
    assert g.feed("a", 100, snapshot=True) is None  # snapshot resets
    assert g.expected("a") == 101
    g.reset("a")
    assert g.expected("a") is None and g.feed("a", 5) is None
    assert len(g) == 2


# --------------------------------------------------------------------------- time

def test_rfc3339():
    assert base.rfc3339_to_ns("2023-09-25T07:49:37.708706Z") == 1695628177708706000
    assert base.rfc3339_to_ns("2023-09-25T07:49:37.708706123Z") == 1695628177708706123
    assert base.rfc3339_to_ns("2023-09-25T07:49:37Z") == 1695628177000000000
    assert base.rfc3339_to_ns("2023-09-25T09:49:37.5+02:00") == 1695628177500000000
    assert base.rfc3339_to_ns("yesterday") is None
    assert base.rfc3339_to_ns("2023-09-25T07:49:37.Z") is None


def _rfc3339_reference(text: str) -> int | None:
    """Independent of the parser's fast path and cache: datetime on the text with the
    fraction taken out, the fraction added back exactly."""
    import datetime as dt
    import re
    m = re.fullmatch(r"(.{19})(?:\.([0-9]+))?(Z|[+-][0-9]{2}:[0-9]{2})", text)
    if m is None:
        return None
    try:
        t = dt.datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    except ValueError:
        return None
    return int(t.timestamp()) * 10**9 + int(((m.group(2) or "") + "0" * 9)[:9])


@settings(max_examples=300, deadline=None)
@given(sec=st.integers(0, 4_000_000_000), frac=st.text("0123456789", min_size=0, max_size=12),
       tz=st.sampled_from(["Z", "+00:00", "+02:00", "-05:30"]))
def test_rfc3339_matches_the_reference(sec, frac, tz):
    """The usual form goes through a cached fast path: every form gives what the
    reference gives, twice (the second time from the cache)."""
    import datetime as dt
    text = dt.datetime.fromtimestamp(sec, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    text += ("." + frac if frac else "") + tz
    want = _rfc3339_reference(text)
    assert want is not None
    assert base.rfc3339_to_ns(text) == want
    assert base.rfc3339_to_ns(text) == want


def test_rfc3339_invalid_dates_are_not_cached_into_answers():
    assert base.rfc3339_to_ns("2023-02-30T07:49:37.5Z") is None     # no such day
    assert base.rfc3339_to_ns("2023-02-30T07:49:37.5Z") is None
    # Digits past the ninth are cut off (the general path), not rounded.
    assert base.rfc3339_to_ns("2023-09-25T07:49:37.1234567899Z") == 1695628177123456789
    assert base.rfc3339_to_ns("2023-09-25T07:49:37.5z") == 1695628177500000000


def test_epoch_units():
    assert base.epoch_to_ns(1669149841) == 1669149841 * 10**9
    assert base.epoch_to_ns(1669149841123) == 1669149841123 * 10**6
    assert base.epoch_to_ns(1669149841123456) == 1669149841123456 * 10**3
    assert base.epoch_to_ns(1669149841123456789) == 1669149841123456789


# --------------------------------------------------------------------------- registry

def test_registry_and_protocol():
    assert set(venues.VENUES) == {"kraken", "kraken_futures", "polymarket", "kalshi"}
    for name, cls in venues.VENUES.items():
        assert cls.name == name
        assert isinstance(cls(), Venue)
        assert cls.url.startswith("wss://")
    with pytest.raises(ConfigError):
        venues.get("binance")


def test_subject_helper():
    book = b'{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[]}]}'
    assert venues.subject("prod", "kraken", book) == "prod.kraken.book.BTC-USD"
    pm = b'{"market":"0xabc","asset_id":"1","event_type":"book","bids":[]}'
    assert venues.subject("prod", "polymarket", pm) == "prod.polymarket.book.0xabc"
    kal = b'{"type":"orderbook_delta","sid":1,"seq":2,"msg":{"market_ticker":"FED-23DEC-T3.00"}}'
    assert venues.subject("prod.eu", "kalshi", kal) == "prod.eu.kalshi.orderbook_delta.FED-23DEC-T3-00"
    assert venues.subject("prod", "kraken", b'{"channel":"heartbeat"}', shard=4) == \
        "prod.kraken.control.shard-4"
    assert venues.subject("prod", "kraken", b'{"channel":"heartbeat"}') == "prod.kraken.unrouted"
    assert venues.subject("prod", "polymarket", b"PONG", shard=1) == "prod.polymarket.control.shard-1"
    assert venues.subject("prod", "kraken", b"\x00garbage", shard=1) == "prod.kraken.unrouted"
    assert venues.subject("prod", "kraken_futures",
                          b'{"feed":"book","product_id":"PF_XBTUSD","seq":1}') == \
        "prod.kraken_futures.book.PF_XBTUSD"


def test_errors_share_one_tree():
    from capture.venues.discovery import DiscoveryError
    from capture.venues.kraken.checksum import BookFormatError
    from capture.venues.kalshi.protocol import KeyFileError
    for cls in (DiscoveryError, BookFormatError, KeyFileError, ConfigError):
        assert issubclass(cls, CaptureError)


# --------------------------------------------------------------------------- fuzz

_fragments = st.sampled_from([
    b"{", b"}", b"[", b"]", b'"', b":", b",", b"\\", b" ", b'"channel"', b'"symbol"', b'"method"',
    b'"market"', b'"event_type"', b'"type"', b'"seq"', b'"sid"', b'"feed"', b'"product_id"',
    b'"event"', b'"timestamp"', b'"ts"', b'"book"', b'"heartbeat"', b'"orderbook_delta"', b"1",
    b"-", b"9" * 25, '"\u00b2"'.encode(), "\u0663".encode(), b"true", b"null", b"PONG",
    b"\xff", b"\x00", b'"2023-01-01T00:00:00Z"',
])
_payloads = st.one_of(st.binary(max_size=200),
                      st.lists(_fragments, max_size=40).map(b"".join))


@settings(max_examples=400, deadline=None)
@given(_payloads)
def test_extractors_never_raise(raw):
    for cls in venues.VENUES.values():
        c = cls.classify(raw)
        assert isinstance(c.kind, Kind)
        rk = cls.route(raw)
        assert rk is None or (isinstance(rk.channel, str) and isinstance(rk.symbol, str))
        cls.sequence(raw)
        cls.exchange_ts_ns(raw)
        venues.subject("p", cls.name, raw, shard=0)
