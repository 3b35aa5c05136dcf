"""Instrument discovery, the generic part: the typed errors, the cursor
pager and the fetch-with-retry every venue's ``discovery`` module uses.

Layers (sans-I/O first, like the venue protocol modules):

1. **Parsers**, one set per venue in ``capture/venues/<venue>/discovery.py``,
   turn one response body into plain records and never touch the network.
   A body that is not what the venue sends raises :class:`BadPage`, which
   the fetcher treats as a failed attempt (a truncated or HTML error body is
   retried, not believed).
2. :class:`CursorPager` is the pagination state machine: it says which URL
   to fetch next, takes the body, and knows when the listing is complete.
3. :func:`fetch_page` moves bytes with the stdlib (``urllib`` in a worker
   thread) and retries every page with capped, fully-jittered exponential
   backoff.  A page that keeps failing raises :class:`DiscoveryError`: a
   half listing is never returned as if it were the whole one (that would
   silently unsubscribe instruments).

Each venue's ``discover(base_url)`` (its ``discover`` trait) returns
placement units: ``(key, members)`` pairs, one per symbol or per group of
instruments that must share a connection (a Polymarket market's tokens).

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

#: What ``discover`` returns: placement units ``(key, members)``.
Units = list[tuple[str, tuple[str, ...]]]




def loads(body: bytes | str | dict | list) -> Any:
    if isinstance(body, (dict, list)):
        return body
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadPage(f"not JSON ({exc.msg})") from None


def cursor_page(body: bytes | str | dict, *, venue: str, items: str, cursor: str,
                end: frozenset[str] = frozenset()) -> tuple[list[dict], str | None]:
    """One page of a cursor-paged list -> ``(its objects, the next cursor)``.

    The next cursor is None at the end: absent, null, empty, or one of the
    venue's ``end`` markers.  Entries that are not objects are left out.

    Raises:
        BadPage: no ``items`` list, or a cursor that is not a string.
    """
    doc = loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get(items), list):
        raise BadPage(f"{venue} page without a {items} list")
    nxt = doc.get(cursor)
    if nxt is not None and not isinstance(nxt, str):
        raise BadPage(f"{venue} {cursor} is not a string: {nxt!r}")
    if nxt in end:
        nxt = None
    return [m for m in doc[items] if isinstance(m, dict)], (nxt or None)


def truthy(v: object) -> bool:
    """Venues send booleans, sometimes as strings."""
    return v is True or (isinstance(v, str) and v.lower() == "true")


def json_list(v: object) -> list:
    """A list that venues send JSON-encoded inside a string (Gamma's
    ``clobTokenIds``/``outcomes``); anything else gives ``[]``."""
    if isinstance(v, list):
        return v
    if isinstance(v, str) and v:
        try:
            out = orjson.loads(v)
        except orjson.JSONDecodeError:
            return []
        return out if isinstance(out, list) else []
    return []


def symbol_units(symbols: Iterable[str]) -> Units:
    """One unit per symbol, first occurrence kept."""
    return [(s, (s,)) for s in dict.fromkeys(symbols)]


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
            raise DiscoveryError(url, 1, f"the listing is longer than max_pages={self._max_pages} "
                                         f"pages ({len(self.items)} items so far): a bound was "
                                         "hit, so no partial listing is returned; check the "
                                         "server-side filters or raise max_pages")
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


async def paginate(pager: CursorPager, policy: RetryPolicy) -> list[dict]:
    while (url := pager.next_url()) is not None:
        await fetch_page(url, pager.feed, policy)
    return pager.items

def changes(before: Iterable[str], after: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(added, removed)`` between two discoveries, sorted, for the change record."""
    b, a = set(before), set(after)
    return sorted(a - b), sorted(b - a)
