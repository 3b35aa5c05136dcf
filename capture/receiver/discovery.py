"""Instrument discovery: pure page parsers, pagination state, and small fetchers.

Layers (sans-I/O first, like the venue modules):

1. **Parsers** turn one response body into plain records and never touch the
   network: :func:`parse_kraken_asset_pairs` (or the v2 ``instrument``
   channel: :func:`parse_kraken_instrument_snapshot`), :func:`parse_gamma_page`
   + :func:`gamma_markets`, :func:`parse_kalshi_page` + :func:`kalshi_markets`,
   :func:`parse_futures_instruments`.  A body that is not what the venue
   sends raises :class:`BadPage`, which the fetcher treats as a failed
   attempt (a truncated or HTML error body is retried, not believed).
2. :class:`CursorPager` is the pagination state machine: it says which URL
   to fetch next, takes the body, and knows when the listing is complete.
3. One ``async def fetch_*`` per venue moves bytes with the stdlib
   (``urllib`` in a worker thread) and retries every page with capped,
   fully-jittered exponential backoff.  A page that keeps failing raises
   :class:`DiscoveryError`: a half listing is never returned as if it were
   the whole one (that would silently unsubscribe instruments).

Errors::

    VenueError
    └── DiscoveryError       url, attempts, reason
        └── BadPage          a body that does not parse as the venue's page (retried)
"""
from __future__ import annotations

import asyncio
import http.client
import random
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import orjson

from common.errors import BadPage, DiscoveryError

KRAKEN_REST = "https://api.kraken.com"
GAMMA_REST = "https://gamma-api.polymarket.com"
KALSHI_REST = "https://api.elections.kalshi.com/trade-api/v2"
FUTURES_REST = "https://futures.kraken.com/derivatives/api/v3"

#: Kraken's v1 asset codes that v2 symbols spell differently.
KRAKEN_V2_NAMES = {"XBT": "BTC", "XDG": "DOGE"}


def _loads(body: bytes | str | dict | list) -> Any:
    if isinstance(body, (dict, list)):
        return body
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadPage(f"not JSON ({exc.msg})") from None


def _truthy(v: object) -> bool:
    """Venues send booleans, sometimes as strings."""
    return v is True or (isinstance(v, str) and v.lower() == "true")


# --------------------------------------------------------------------------
# Kraken spot
# --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class KrakenPair:
    symbol: str          # v2 name, e.g. BTC/USD
    wsname: str          # v1 name, e.g. XBT/USD
    altname: str
    status: str
    pair_decimals: int | None
    lot_decimals: int | None


def kraken_symbol(wsname: str) -> str:
    """v1 ``wsname`` -> v2 symbol: ``XBT/USD`` -> ``BTC/USD``, ``XDG/EUR`` -> ``DOGE/EUR``."""
    return "/".join(KRAKEN_V2_NAMES.get(part, part) for part in wsname.split("/"))


def parse_kraken_asset_pairs(body: bytes | dict, statuses: Iterable[str] = ("online",)
                             ) -> list[KrakenPair]:
    """``GET /0/public/AssetPairs`` -> pairs whose status is in ``statuses``,
    sorted by v2 symbol.  Pairs without a ``wsname`` (not on WebSocket) are skipped.

    Raises:
        BadPage: not the AssetPairs shape, or the venue reported an error.
    """
    doc = _loads(body)
    if not isinstance(doc, dict):
        raise BadPage("AssetPairs: not an object")
    if doc.get("error"):
        raise BadPage(f"AssetPairs error: {doc['error']}")
    result = doc.get("result")
    if not isinstance(result, dict):
        raise BadPage("AssetPairs: no result object")
    wanted = frozenset(statuses)
    out: dict[str, KrakenPair] = {}
    for name, p in result.items():
        if not isinstance(p, dict) or not isinstance(p.get("wsname"), str):
            continue
        status = p.get("status", "online")
        if status not in wanted:
            continue
        sym = kraken_symbol(p["wsname"])
        out.setdefault(sym, KrakenPair(
            sym, p["wsname"], str(p.get("altname", name)), status,
            p.get("pair_decimals") if isinstance(p.get("pair_decimals"), int) else None,
            p.get("lot_decimals") if isinstance(p.get("lot_decimals"), int) else None))
    return [out[k] for k in sorted(out)]


def parse_kraken_instrument_snapshot(body: bytes | dict, statuses: Iterable[str] = ("online",)
                                     ) -> list[KrakenPair]:
    """The v2 ``instrument`` channel snapshot -> pairs (already v2 names).

    The alternative to AssetPairs that needs no REST call: subscribe
    ``instrument`` on a WebSocket and hand the snapshot frame here.  ``wsname``
    and ``altname`` are the v2 symbol (v1 names are not in this feed).

    Raises:
        BadPage: not an instrument snapshot.
    """
    doc = _loads(body)
    data = doc.get("data") if isinstance(doc, dict) else None
    if (not isinstance(doc, dict) or doc.get("channel") != "instrument"
            or not isinstance(data, dict) or not isinstance(data.get("pairs"), list)):
        raise BadPage("not a Kraken instrument snapshot")
    wanted = frozenset(statuses)
    out: dict[str, KrakenPair] = {}
    for p in data["pairs"]:
        if not isinstance(p, dict) or not isinstance(p.get("symbol"), str):
            continue
        status = p.get("status", "online")
        if status not in wanted:
            continue
        sym = p["symbol"]
        pp, qp = p.get("price_precision"), p.get("qty_precision")
        out.setdefault(sym, KrakenPair(sym, sym, sym, status,
                                       pp if isinstance(pp, int) else None,
                                       qp if isinstance(qp, int) else None))
    return [out[k] for k in sorted(out)]


# --------------------------------------------------------------------------
# Polymarket (Gamma)
# --------------------------------------------------------------------------

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
    doc = _loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("markets"), list):
        raise BadPage("Gamma keyset page without a markets list")
    cursor = doc.get("next_cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise BadPage(f"Gamma next_cursor is not a string: {cursor!r}")
    if cursor == _END_CURSOR:
        cursor = None
    return [m for m in doc["markets"] if isinstance(m, dict)], (cursor or None)


def _json_list(v: object) -> list:
    """``clobTokenIds``/``outcomes`` are JSON-encoded strings of lists."""
    if isinstance(v, list):
        return v
    if isinstance(v, str) and v:
        try:
            out = orjson.loads(v)
        except orjson.JSONDecodeError:
            return []
        return out if isinstance(out, list) else []
    return []


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
        if not _truthy(m.get("active")) or _truthy(m.get("closed")):
            continue
        if "enableOrderBook" in m and not _truthy(m.get("enableOrderBook")):
            continue
        cid = m.get("conditionId")
        if not isinstance(cid, str) or not cid or cid in seen_markets:
            continue
        tokens = tuple(str(t) for t in _json_list(m.get("clobTokenIds"))
                       if isinstance(t, (str, int)) and str(t) not in seen_tokens)
        tokens = tuple(dict.fromkeys(tokens))
        if not tokens:
            continue
        seen_markets.add(cid)
        seen_tokens.update(tokens)
        outcomes = tuple(str(o) for o in _json_list(m.get("outcomes")))
        slug = m.get("slug") if isinstance(m.get("slug"), str) else None
        out.append(PolymarketMarket(cid, tokens, outcomes, slug))
    return out


# --------------------------------------------------------------------------
# Kalshi
# --------------------------------------------------------------------------

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
    doc = _loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("markets"), list):
        raise BadPage("Kalshi page without a markets list")
    cursor = doc.get("cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise BadPage(f"Kalshi cursor is not a string: {cursor!r}")
    return [m for m in doc["markets"] if isinstance(m, dict)], (cursor or None)


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


# --------------------------------------------------------------------------
# Kraken Futures
# --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FuturesInstrument:
    symbol: str          # product id as the WebSocket wants it, e.g. PF_XBTUSD
    type: str | None


def parse_futures_instruments(body: bytes | dict) -> list[FuturesInstrument]:
    """``GET /instruments`` -> tradeable instruments, product ids upper-cased.

    Raises:
        BadPage: not the instruments shape or ``result`` is not success.
    """
    doc = _loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("instruments"), list):
        raise BadPage("Futures instruments: no instruments list")
    if doc.get("result", "success") != "success":
        raise BadPage(f"Futures instruments: result {doc.get('result')!r}: {doc.get('error')}")
    out: dict[str, FuturesInstrument] = {}
    for ins in doc["instruments"]:
        if not isinstance(ins, dict) or not isinstance(ins.get("symbol"), str):
            continue
        if not _truthy(ins.get("tradeable", True)):
            continue
        sym = ins["symbol"].upper()
        typ = ins.get("type")
        out.setdefault(sym, FuturesInstrument(sym, typ if isinstance(typ, str) else None))
    return [out[k] for k in sorted(out)]


# --------------------------------------------------------------------------
# Pagination state machine
# --------------------------------------------------------------------------

PageParser = Callable[[bytes], tuple[list[dict], "str | None"]]


class CursorPager:
    """Cursor pagination: ``next_url()`` -> fetch -> ``feed(body)`` -> ... -> ``done``.

    States: *more* (``next_url()`` gives the page to fetch) and *done*.
    ``feed`` only advances on a good page, so a failed or garbled page is
    simply fetched again: the cursor never moves past data not received.

    Raises (from ``feed``): BadPage for a bad body (retryable);
    DiscoveryError if the venue repeats a cursor (a loop) or ``max_pages``
    is exceeded.
    """

    def __init__(self, url: str, params: dict[str, str | int], cursor_param: str,
                 parse: PageParser, max_pages: int = 10_000) -> None:
        self._url = url
        self._params = dict(params)
        self._cursor_param = cursor_param
        self._parse = parse
        self._max_pages = max_pages
        self._cursor: str | None = None
        self._seen: set[str] = set()
        self.pages = 0
        self.items: list[dict] = []
        self.done = False

    def next_url(self) -> str | None:
        if self.done:
            return None
        params = dict(self._params)
        if self._cursor is not None:
            params[self._cursor_param] = self._cursor
        return f"{self._url}?{urllib.parse.urlencode(params)}" if params else self._url

    def feed(self, body: bytes) -> list[dict]:
        if self.done:
            raise DiscoveryError(self._url, 0, "page fed after the last page")
        items, cursor = self._parse(body)
        url = self.next_url() or self._url
        self.pages += 1
        self.items.extend(items)
        if cursor is None or (not items and cursor == self._cursor):
            self.done = True
        elif cursor in self._seen:
            raise DiscoveryError(url, 1, f"cursor {cursor!r} repeated: pagination loops")
        elif self.pages >= self._max_pages:
            raise DiscoveryError(url, 1, f"more than {self._max_pages} pages")
        else:
            self._seen.add(cursor)
            self._cursor = cursor
        return items


# --------------------------------------------------------------------------
# I/O: fetch with retry
# --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Per-page retry: ``attempts`` tries, delays ``min(max_delay, base_delay
    * 2**n)`` scaled by a uniform random factor (full jitter), so many hosts
    re-discovering at once do not retry in step."""

    attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    timeout: float = 30.0

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        cap = min(self.max_delay, self.base_delay * (2 ** min(failures, 30)))
        return (rng or random).uniform(0, cap)


_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_T = TypeVar("_T")


def _get(url: str, timeout: float) -> bytes:
    req = urllib.request.Request(url, headers={"Accept": "application/json",
                                               "User-Agent": "capture-discovery"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (http/https only)
        return resp.read()


async def fetch_page(url: str, parse: Callable[[bytes], _T], policy: RetryPolicy) -> _T:
    """GET ``url`` and ``parse`` the body, retrying transport errors, retryable
    statuses (429, 5xx, ...) and bodies that do not parse.

    Raises:
        DiscoveryError: a non-retryable status, or every attempt failed.
    """
    if not url.startswith(("http://", "https://")):
        raise DiscoveryError(url, 0, "only http(s) URLs are fetched")
    reason = "no attempt made"
    for attempt in range(1, max(1, policy.attempts) + 1):
        wait = None
        try:
            body = await asyncio.to_thread(_get, url, policy.timeout)
            return parse(body)
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code}"
            exc.close()
            if exc.code not in _RETRY_STATUS:
                raise DiscoveryError(url, attempt, reason) from None
            ra = exc.headers.get("Retry-After") if exc.headers else None
            if ra and ra.strip().isdigit():
                wait = min(policy.max_delay, float(ra.strip()))
        except BadPage as exc:
            reason = f"bad page: {exc.reason}"
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        if attempt < policy.attempts:
            await asyncio.sleep(max(wait or 0.0, policy.delay(attempt - 1)))
    raise DiscoveryError(url, max(1, policy.attempts), reason)


async def _paginate(pager: CursorPager, policy: RetryPolicy) -> list[dict]:
    while (url := pager.next_url()) is not None:
        await fetch_page(url, pager.feed, policy)
    return pager.items


async def fetch_kraken_pairs(base_url: str = KRAKEN_REST, *, statuses: Iterable[str] = ("online",),
                             policy: RetryPolicy = RetryPolicy()) -> list[KrakenPair]:
    """All Kraken spot pairs (one call) as v2 symbols.  Raises DiscoveryError."""
    wanted = tuple(statuses)
    return await fetch_page(f"{base_url.rstrip('/')}/0/public/AssetPairs",
                            lambda b: parse_kraken_asset_pairs(b, wanted), policy)


async def fetch_gamma_markets(base_url: str = GAMMA_REST, *, limit: int = 100,
                              policy: RetryPolicy = RetryPolicy()) -> list[PolymarketMarket]:
    """Every active, open Polymarket market via Gamma keyset pages.  Raises DiscoveryError."""
    pager = CursorPager(f"{base_url.rstrip('/')}/markets/keyset", {"limit": limit},
                        "after_cursor", parse_gamma_page)
    return gamma_markets(await _paginate(pager, policy))


async def fetch_kalshi_markets(base_url: str = KALSHI_REST, *, status: str | None = "open",
                               limit: int = 1000, policy: RetryPolicy = RetryPolicy()
                               ) -> list[KalshiMarket]:
    """Kalshi markets with ``status`` (cursor loop until empty).  Raises DiscoveryError."""
    params: dict[str, str | int] = {"limit": limit}
    if status:
        params["status"] = status
    pager = CursorPager(f"{base_url.rstrip('/')}/markets", params, "cursor", parse_kalshi_page)
    return kalshi_markets(await _paginate(pager, policy))


async def fetch_futures_instruments(base_url: str = FUTURES_REST, *,
                                    policy: RetryPolicy = RetryPolicy()
                                    ) -> list[FuturesInstrument]:
    """Tradeable Kraken Futures product ids.  Raises DiscoveryError."""
    return await fetch_page(f"{base_url.rstrip('/')}/instruments",
                            parse_futures_instruments, policy)


def changes(before: Iterable[str], after: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(added, removed)`` between two discoveries, sorted, for the change record."""
    b, a = set(before), set(after)
    return sorted(a - b), sorted(b - a)
