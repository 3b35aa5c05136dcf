"""Discovery, the generic part: the cursor pager, the retry policy, fetch_page's errors."""
from __future__ import annotations

import asyncio
import random
import urllib.parse

import pytest

from capture.venues import discovery as d
from capture.venues.discovery import BadPage, CursorPager, DiscoveryError, RetryPolicy, cursor_page
from capture.venues.kalshi import discovery as kalshi
from capture.venues.kraken_futures import discovery as futures
from discovery_helpers import FAST

def test_changes():
    assert d.changes(["a", "b"], ["b", "c"]) == (["c"], ["a"])

def test_cursor_pager_states():
    p = CursorPager("http://h/markets", {"limit": 2}, "cursor", kalshi.parse_kalshi_page)
    assert p.next_url() == "http://h/markets?limit=2"
    p.feed(b'{"markets":[{"ticker":"A"}],"cursor":"c1"}')
    assert p.next_url() == "http://h/markets?limit=2&cursor=c1"
    with pytest.raises(BadPage):
        p.feed(b"garbage")
    assert p.next_url() == "http://h/markets?limit=2&cursor=c1"   # bad page: no advance
    p.feed(b'{"markets":[{"ticker":"B"}],"cursor":""}')
    assert p.done and p.next_url() is None and p.pages == 2
    assert [m["ticker"] for m in p.items] == ["A", "B"]
    with pytest.raises(DiscoveryError):
        p.feed(b'{"markets":[],"cursor":""}')

def test_cursor_pager_refuses_loops():
    p = CursorPager("http://h/m", {}, "cursor", kalshi.parse_kalshi_page)
    p.feed(b'{"markets":[{"ticker":"A"}],"cursor":"c1"}')
    p.feed(b'{"markets":[{"ticker":"B"}],"cursor":"c2"}')
    with pytest.raises(DiscoveryError, match="repeated"):
        p.feed(b'{"markets":[{"ticker":"C"}],"cursor":"c1"}')

def test_retry_policy_delays_are_capped_and_jittered():
    pol = RetryPolicy(base_delay=0.5, max_delay=4.0)
    rng = random.Random(1)
    for n in range(12):
        assert 0.0 <= pol.delay(n, rng) <= min(4.0, 0.5 * 2 ** n)

def test_unreachable_host_raises_typed_error():
    # A port nothing listens on: connection refused on every attempt.
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(DiscoveryError) as ei:
        asyncio.run(futures.fetch_futures_instruments(f"http://127.0.0.1:{port}",
                                                policy=RetryPolicy(attempts=2, base_delay=0,
                                                                   max_delay=0, timeout=5)))
    assert ei.value.attempts == 2
    with pytest.raises(DiscoveryError):
        asyncio.run(d.fetch_page("file:///etc/passwd", bytes, FAST))
    assert urllib.parse.urlparse(ei.value.url).port == port


def test_every_venue_with_discovery_has_a_rest_url():
    from capture.venues import VENUES
    for name, v in VENUES.items():
        assert v.discover is None or v.rest_url, name


@pytest.mark.parametrize("body,want", [
    (b'{"markets":[{"a":1},2,"x"],"cursor":"c2"}', ([{"a": 1}], "c2")),
    (b'{"markets":[],"cursor":""}', ([], None)),
    (b'{"markets":[],"cursor":null}', ([], None)),
    (b'{"markets":[]}', ([], None)),
    (b'{"markets":[],"cursor":"END"}', ([], None)),
])
def test_cursor_page_reads_objects_and_the_next_cursor(body, want):
    assert cursor_page(body, venue="V", items="markets", cursor="cursor", end=frozenset({"END"})) == want


@pytest.mark.parametrize("body,says", [
    (b'{"cursor":"c"}', "V page without a markets list"),
    (b'[]', "V page without a markets list"),
    (b'{"markets":[],"cursor":7}', "V cursor is not a string: 7"),
    (b'{"markets":', "not JSON"),
])
def test_cursor_page_refuses_another_shape_by_name(body, says):
    with pytest.raises(BadPage) as ei:
        cursor_page(body, venue="V", items="markets", cursor="cursor")
    assert says in str(ei.value)
