"""Kalshi instrument discovery: ``GET /markets`` cursor pages (until the
cursor comes back empty)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from capture.venues.discovery import CursorPager, RetryPolicy, Units, cursor_page, paginate, symbol_units

REST = "https://api.elections.kalshi.com/trade-api/v2"


@dataclass(frozen=True, slots=True)
class KalshiMarket:
    ticker: str
    event_ticker: str | None
    status: str | None


def parse_kalshi_page(body: bytes | dict) -> tuple[list[dict], str | None]:
    """One ``/markets`` page -> ``(markets, cursor or None when empty)``.

    Raises:
        BadPage: not the markets shape.
    """
    return cursor_page(body, venue="Kalshi", items="markets", cursor="cursor")


def kalshi_markets(markets: Iterable[dict]) -> list[KalshiMarket]:
    """Records from market objects, de-duplicated by ticker, in order."""
    out: dict[str, KalshiMarket] = {}
    for m in markets:
        t = m.get("ticker")
        if isinstance(t, str) and t and t not in out:
            ev, st = m.get("event_ticker"), m.get("status")
            out[t] = KalshiMarket(t, ev if isinstance(ev, str) else None,
                                  st if isinstance(st, str) else None)
    return list(out.values())


async def fetch_kalshi_markets(base_url: str = REST, *, status: str | None = "open",
                               limit: int = 1000, max_pages: int = 1_000,
                               policy: RetryPolicy = RetryPolicy()) -> list[KalshiMarket]:
    """Kalshi markets with ``status``, filtered by the server (cursor loop
    until empty).  Raises DiscoveryError (a failing page, or ``max_pages``)."""
    params: dict[str, str | int] = {"limit": limit}
    if status:
        params["status"] = status
    pager = CursorPager(f"{base_url.rstrip('/')}/markets", params, "cursor", parse_kalshi_page,
                        max_pages)
    return kalshi_markets(await paginate(pager, policy))


async def discover(base_url: str | None = None) -> Units:
    """One unit per open market.  Raises DiscoveryError."""
    return symbol_units(m.ticker for m in await fetch_kalshi_markets(base_url or REST))
