"""Discovery at the venues' real sizes, against the simulator's REST
listings (which generate their closed markets a page at a time).

* Gamma: 1,000,000 closed and 2,000 active markets; discovery asks the
  server to filter and gets exactly the active ones.  A client that does not
  filter hits its page bound and says so.
* Kalshi: 10,000 open markets among a million settled ones (``status=open``).
* Kraken Futures: a listing of 400 instruments in one call.

Assertions are on results only, never on times."""
from __future__ import annotations

import asyncio

import pytest

from capture.venues import discovery as d
from capture.venues.kalshi import discovery as kalshi
from capture.venues.kraken_futures import discovery as futures
from capture.venues.polymarket import discovery as polymarket
from capture.simulator import Scenario, SimulatorThread
from capture.simulator.universe import Universe

POLICY = d.RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, timeout=30)
MILLION = 1_000_000


def _instruments_for_open_gamma(n_open: int) -> int:
    """Universe size whose Polymarket markets hold exactly ``n_open`` active,
    not closed ones (the universe marks every 5th closed, every 7th inactive)."""
    k = 0
    count = 0
    while count < n_open:
        if k % 7 != 6 and k % 5 != 4:
            count += 1
        k += 1
    return k


def test_gamma_million_closed_two_thousand_active():
    n = _instruments_for_open_gamma(2000)
    uni = Universe(0, n)
    closed_in_universe = sum(1 for m in uni.poly if m.closed)
    sc = Scenario(rate=0, instruments=n, listed_closed=MILLION - closed_in_universe)
    want = {m.condition_id for m in uni.poly if m.active and not m.closed}
    assert len(want) == 2000
    with SimulatorThread(["polymarket"], sc) as st:
        base = st.rest_url("polymarket")
        got = asyncio.run(polymarket.fetch_gamma_markets(base, limit=500, policy=POLICY))
        log = list(st.sim.rest.log)
        # without the server-side filters the listing is 1,002,000+ markets:
        # the page bound is hit and named, nothing partial comes back
        pager = d.CursorPager(f"{base}/markets/keyset", {"limit": 500}, "after_cursor",
                              polymarket.parse_gamma_page, max_pages=40)
        with pytest.raises(d.DiscoveryError, match="max_pages=40") as ei:
            asyncio.run(d.paginate(pager, POLICY))
    assert {m.condition_id for m in got} == want and len(got) == 2000
    assert all(len(m.token_ids) == 2 for m in got)
    assert "no partial listing" in str(ei.value)
    # the filtered listing took 4 pages, each asked with the filters
    filtered = [t for t, _ in log if "closed=false" in t]
    assert len(filtered) == 4 and all("active=true" in t for t in filtered)


def test_kalshi_ten_thousand_open_among_a_million_settled():
    n = 12_000
    uni = Universe(0, n)
    want = [m.ticker for m in uni.kalshi if m.status == "active"]
    sc = Scenario(rate=0, instruments=n, listed_closed=MILLION)
    with SimulatorThread(["kalshi"], sc) as st:
        got = asyncio.run(kalshi.fetch_kalshi_markets(st.rest_url("kalshi") + "/trade-api/v2",
                                                 limit=1000, policy=POLICY))
    assert [m.ticker for m in got] == want and len(want) == 10_000
    assert {m.status for m in got} == {"active"}


def test_futures_full_listing():
    n = 400
    uni = Universe(0, n)
    want = sorted(p.symbol for p in uni.futures if p.tradeable)
    with SimulatorThread(["kraken_futures"], Scenario(rate=0, instruments=n)) as st:
        got = asyncio.run(futures.fetch_futures_instruments(
            st.rest_url("kraken_futures") + "/derivatives/api/v3", policy=POLICY))
    assert [i.symbol for i in got] == want and 300 < len(want) < n
