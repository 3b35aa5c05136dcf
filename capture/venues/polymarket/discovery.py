"""Polymarket instrument discovery: Gamma ``markets/keyset`` pages; a market
(condition id) is one placement unit holding its outcome tokens."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from capture.venues.discovery import CursorPager, RetryPolicy, Units, cursor_page, json_list, paginate, truthy

REST = "https://gamma-api.polymarket.com"

_END_CURSOR = "LTE="


@dataclass(frozen=True, slots=True)
class PolymarketMarket:
    condition_id: str              # 0x hex; the routing key
    token_ids: tuple[str, ...]     # in the order of outcomes
    outcomes: tuple[str, ...]
    slug: str | None = None


def parse_gamma_page(body: bytes | dict) -> tuple[list[dict], str | None]:
    """One ``markets/keyset`` page -> ``(markets, next_cursor or None)``.

    ``next_cursor`` is absent on the last page; an empty string, null, or
    the CLOB API's end marker ``LTE=`` (base64 of -1) are treated the same.

    Raises:
        BadPage: not the keyset shape.
    """
    return cursor_page(body, venue="Gamma keyset", items="markets", cursor="next_cursor",
                       end=frozenset({_END_CURSOR}))



def gamma_markets(markets: Iterable[dict]) -> list[PolymarketMarket]:
    """Active, not closed markets with an order book; token ids de-duplicated.

    A token id already seen (pages can overlap, markets can repeat) is
    dropped from later markets; a market left without tokens is dropped.
    ``enableOrderBook: false`` markets have no CLOB book and are skipped.
    """
    seen_tokens: set[str] = set()
    seen_markets: set[str] = set()
    out = []
    for m in markets:
        if not truthy(m.get("active")) or truthy(m.get("closed")):
            continue
        if "enableOrderBook" in m and not truthy(m.get("enableOrderBook")):
            continue
        cid = m.get("conditionId")
        if not isinstance(cid, str) or not cid or cid in seen_markets:
            continue
        tokens = tuple(str(t) for t in json_list(m.get("clobTokenIds"))
                       if isinstance(t, (str, int)) and str(t) not in seen_tokens)
        tokens = tuple(dict.fromkeys(tokens))
        if not tokens:
            continue
        seen_markets.add(cid)
        seen_tokens.update(tokens)
        outcomes = tuple(str(o) for o in json_list(m.get("outcomes")))
        slug = m.get("slug") if isinstance(m.get("slug"), str) else None
        out.append(PolymarketMarket(cid, tokens, outcomes, slug))
    return out


#: Gamma's own filters (documented query parameters of the markets listing):
#: the server drops closed and inactive markets, so the listing is the ~10^3
#: tradeable markets, not the >10^6 markets Gamma has ever listed (ids passed
#: one million in 2026; unfiltered that is >10,000 pages).  ``closed`` is
#: sent explicitly: the keyset endpoint is reported to default it to false,
#: the legacy one to return both.  :func:`gamma_markets` filters again.
GAMMA_FILTERS: dict[str, str | int] = {"active": "true", "closed": "false"}


async def fetch_gamma_markets(base_url: str = REST, *, limit: int = 100,
                              max_pages: int = 1_000, policy: RetryPolicy = RetryPolicy()
                              ) -> list[PolymarketMarket]:
    """Every active, open Polymarket market via Gamma keyset pages, filtered by
    the server (:data:`GAMMA_FILTERS`).

    Raises:
        DiscoveryError: a page kept failing, or the listing is longer than
            ``max_pages`` (the message names the bound).
    """
    pager = CursorPager(f"{base_url.rstrip('/')}/markets/keyset",
                        {"limit": limit, **GAMMA_FILTERS}, "after_cursor", parse_gamma_page,
                        max_pages)
    return gamma_markets(await paginate(pager, policy))


async def discover(base_url: str | None = None) -> Units:
    """One unit per market: its token ids.  Raises DiscoveryError."""
    return [(m.condition_id, tuple(dict.fromkeys(m.token_ids)))
            for m in await fetch_gamma_markets(base_url or REST)]
