"""NATS subject tokens and subject layout."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flusher.publisher import subjects
from common.errors import ConfigError


@pytest.mark.parametrize("name,tok", [
    ("BTC/USD", "BTC-USD"),
    ("FED-23DEC-T3.00", "FED-23DEC-T3-00"),
    ("a b\tc\nd", "a-b-c-d"),
    ("*", "-"), (">", "-"), ("x.*.>", "x----"),
    ("0x5f65177b", "0x5f65177b"),
    ("PF_XBTUSD", "PF_XBTUSD"),
    ("", "_"),
    ("caf\u00e9", "caf-"),
])
def test_token(name, tok):
    assert subjects.token(name) == tok


@given(st.text(max_size=40))
def test_token_is_always_one_safe_token(name):
    t = subjects.token(name)
    assert t and not any(c in t for c in ".*> \t\r\n\x00")
    assert t.isascii()
    assert subjects.token(name) is t or subjects.token(name) == t  # cached / stable


def test_layout():
    assert subjects.data_subject("prod", "kraken", "book", "BTC/USD") == "prod.kraken.book.BTC-USD"
    assert subjects.control_subject("prod", "kraken", 3) == "prod.kraken.control.shard-3"
    assert subjects.unrouted_subject("prod", "polymarket") == "prod.polymarket.unrouted"


def test_prefix_check():
    assert subjects.check_prefix("prod.eu-1") == "prod.eu-1"
    for bad in ("", "prod.", ".prod", "pr od", "prod.*", "a..b", "p>"):
        with pytest.raises(ConfigError):
            subjects.check_prefix(bad)


def test_cache_hits():
    subjects.token.cache_clear()
    for _ in range(3):
        subjects.token("ETH/USD")
    assert subjects.token.cache_info().hits == 2
