"""REST discovery endpoints, served on the simulator's WebSocket ports.

Plain HTTP GETs reach the websockets server's ``process_request`` hook, which
answers them here instead of upgrading (see ``server.py``).  Routes (the
venue's real paths):

* Kraken spot ``GET /0/public/AssetPairs`` -> ``{"error":[],"result":{..}}``
  (v1 ``wsname`` such as ``XBT/USD``; ``status``);
* Kraken Futures ``GET /derivatives/api/v3/instruments``;
* Polymarket Gamma ``GET /markets/keyset?limit=..&after_cursor=..`` ->
  ``{"markets":[..],"next_cursor":..}`` (no ``next_cursor`` on the last page;
  ``clobTokenIds`` and ``outcomes`` are JSON-encoded strings);
* Kalshi ``GET /trade-api/v2/markets?limit=..&cursor=..&status=open`` ->
  ``{"markets":[..],"cursor":".."}`` (empty cursor on the last page).

``Scenario.page_failures`` makes page k answer HTTP 500 to its first n
requests (per endpoint), so clients' retries are exercised.

Scale: ``Scenario.listed_closed`` puts that many closed (Gamma) / settled
(Kalshi) markets in front of the universe's.  They are generated per page
from their index (:class:`Listing`), never as a list, and the server-side
filters (Gamma ``closed`` / ``active``, Kalshi ``status``) answer from the
universe alone, as an index would: a million closed markets cost a filtered
listing nothing.
"""
from __future__ import annotations

import base64
import hashlib
from collections import Counter
from typing import Callable, Sequence
from urllib.parse import parse_qs, urlsplit

import orjson

from capture.simulator.script import Scenario
from capture.simulator.universe import Universe
from capture.simulator.values import fixed

ASSET_PAIRS = "/0/public/AssetPairs"
FUTURES_INSTRUMENTS = "/derivatives/api/v3/instruments"
GAMMA_KEYSET = "/markets/keyset"
KALSHI_MARKETS = "/trade-api/v2/markets"
PATHS = (ASSET_PAIRS, FUTURES_INSTRUMENTS, GAMMA_KEYSET, KALSHI_MARKETS)


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _offset(cursor: str) -> int | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        tag, _, num = raw.partition(":")
        return int(num) if tag == "offset" else None
    except (ValueError, UnicodeDecodeError):
        return None


class Listing:
    """``extra`` generated entries (by index) followed by ``tail``; sliced lazily."""

    def __init__(self, extra: int, make: Callable[[int], dict], tail: Sequence,
                 conv: Callable[[object], dict]) -> None:
        self.extra, self.make, self.tail, self.conv = extra, make, tail, conv

    def __len__(self) -> int:
        return self.extra + len(self.tail)

    def page(self, offset: int, limit: int) -> list[dict]:
        return [self.make(i) if i < self.extra else self.conv(self.tail[i - self.extra])
                for i in range(offset, min(offset + limit, len(self)))]


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(":".join(map(str, parts)).encode()).digest()


class Rest:
    """The discovery answers of one simulator (shared by its venue servers)."""

    def __init__(self, universe: Universe, scenario: Scenario) -> None:
        self.u, self.sc = universe, scenario
        self._poly_index = {m.condition_id: i for i, m in enumerate(universe.poly)}
        self.attempts: Counter[tuple[str, int]] = Counter()
        #: Every request served, as (path, status), for tests.
        self.log: list[tuple[str, int]] = []

    def handle(self, target: str) -> tuple[int, bytes] | None:
        """(HTTP status, JSON body) for a request target, or None if unknown."""
        parts = urlsplit(target)
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path = parts.path.rstrip("/") or "/"
        if path not in PATHS:
            return None
        try:
            status, body = self._route(path, q)
        except ValueError as exc:
            status, body = 400, orjson.dumps({"error": str(exc)})
        self.log.append((target, status))
        return status, body

    def _fail(self, path: str, page: int) -> bool:
        """True when this request of page ``page`` is one of the scripted 500s."""
        self.attempts[(path, page)] += 1
        return self.attempts[(path, page)] <= self.sc.page_failures.get(page, 0)

    def _route(self, path: str, q: dict[str, str]) -> tuple[int, bytes]:
        if path in (ASSET_PAIRS, FUTURES_INSTRUMENTS):
            if self._fail(path, 0):
                return 500, b'{"error":["EService:Unavailable"]}'
            return 200, self.asset_pairs() if path == ASSET_PAIRS else self.instruments()
        limit = int(q.get("limit", "100"))
        if not 1 <= limit <= 1000:
            raise ValueError("limit must be in 1..1000")
        cursor = q.get("after_cursor" if path == GAMMA_KEYSET else "cursor", "")
        offset = _offset(cursor) if cursor else 0
        if offset is None:
            raise ValueError("invalid cursor")
        if self._fail(path, offset // limit):
            return 500, b'{"error":"internal server error"}'
        if path == GAMMA_KEYSET:
            return 200, self.gamma_page(offset, limit, q)
        return 200, self.kalshi_page(offset, limit, q.get("status"))

    # -- bodies ---------------------------------------------------------
    def asset_pairs(self) -> bytes:
        result = {}
        for p in self.u.kraken:
            result[p.key] = {
                "altname": p.altname, "wsname": p.wsname, "aclass_base": "currency",
                "base": p.base, "aclass_quote": "currency", "quote": p.quote, "lot": "unit",
                "cost_decimals": 5, "pair_decimals": p.price_decimals,
                "lot_decimals": p.qty_decimals, "lot_multiplier": 1,
                "leverage_buy": [], "leverage_sell": [],
                "fees": [[0, 0.4], [10000, 0.35]], "fees_maker": [[0, 0.25], [10000, 0.2]],
                "fee_volume_currency": "ZUSD", "margin_call": 80, "margin_stop": 40,
                "ordermin": "0.0001", "costmin": "0.5",
                "tick_size": fixed(1, p.price_decimals), "status": p.status}
        return orjson.dumps({"error": [], "result": result})

    def instruments(self) -> bytes:
        return orjson.dumps({"result": "success", "serverTime": "2026-01-01T00:00:00.000Z",
                             "instruments": [{
                                 "symbol": p.symbol, "type": "flexible_futures",
                                 "underlying": None, "tickSize": 10 ** -p.price_decimals,
                                 "contractSize": 1, "tradeable": p.tradeable,
                                 "impactMidSize": 1, "maxPositionSize": 1000000,
                                 "openingDate": "2022-01-01T00:00:00.000Z",
                                 "marginLevels": [], "fundingRateCoefficient": 8,
                                 "maxRelativeFundingRate": 0.001, "isin": None,
                                 "contractValueTradePrecision": 4, "postOnly": False,
                                 "feeScheduleUid": "sim", "retailMarginLevels": [],
                                 "category": "Layer 1", "tags": [], "pair": p.pair,
                                 "base": p.pair.split(":")[0], "quote": "USD"}
                                 for p in self.u.futures]})

    def _gamma_market(self, m) -> dict:
        return {
            "id": str(self.sc.listed_closed + 500000 + self._poly_index[m.condition_id]),
            "question": m.question, "conditionId": m.condition_id, "slug": m.slug,
            "outcomes": orjson.dumps(list(m.outcomes)).decode(),
            "outcomePrices": '["0.5", "0.5"]',
            "clobTokenIds": orjson.dumps(list(m.token_ids)).decode(),
            "active": m.active, "closed": m.closed, "archived": False,
            "enableOrderBook": True, "acceptingOrders": m.active and not m.closed,
            "orderPriceMinTickSize": 10 ** -m.tick_decimals, "orderMinSize": 5,
            "negRisk": False, "endDate": "2026-12-31T00:00:00Z"}

    def _gamma_closed(self, i: int) -> dict:
        """Generated closed market ``i`` (resolved long ago; never subscribable)."""
        h = _digest(self.sc.seed, "gamma-closed", i)
        toks = [str(int.from_bytes(h[:16], "big")), str(int.from_bytes(h[16:], "big"))]
        return {"id": str(i + 1), "question": f"Closed simulated event {i}?",
                "conditionId": "0x" + h.hex(), "slug": f"closed-{i}",
                "outcomes": '["Yes", "No"]', "outcomePrices": '["1", "0"]',
                "clobTokenIds": orjson.dumps(toks).decode(), "active": True, "closed": True,
                "archived": False, "enableOrderBook": True, "acceptingOrders": False,
                "endDate": "2024-01-01T00:00:00Z"}

    def gamma_page(self, offset: int, limit: int, q: dict[str, str]) -> bytes:
        want = {k: q[k].lower() == "true" for k in ("closed", "active") if k in q}
        markets = [m for m in self.u.poly
                   if all(getattr(m, k) == v for k, v in want.items())]
        # The generated markets are closed and active: in only where the
        # filters allow them, and then without being built until read.
        extra = self.sc.listed_closed if want.get("closed", True) and want.get("active", True) else 0
        listing = Listing(extra, self._gamma_closed, markets, self._gamma_market)
        body: dict = {"markets": listing.page(offset, limit)}
        if offset + limit < len(listing):
            body["next_cursor"] = _cursor(offset + limit)
        return orjson.dumps(body)

    @staticmethod
    def _kalshi_market(m) -> dict:
        return {
            "ticker": m.ticker, "event_ticker": m.event_ticker, "market_type": "binary",
            "title": m.title, "yes_sub_title": "Yes", "no_sub_title": "No",
            "open_time": "2025-12-01T00:00:00Z", "close_time": "2026-01-01T23:59:00Z",
            "expiration_time": "2026-01-02T00:00:00Z", "status": m.status,
            "yes_bid": 45, "yes_ask": 47, "no_bid": 53, "no_ask": 55, "last_price": 46,
            "yes_bid_dollars": "0.4500", "yes_ask_dollars": "0.4700",
            "volume": 1000, "open_interest": 500, "tick_size": 1,
            "price_level_structure": "linear_cent", "response_price_units": "usd_cent"}

    def _kalshi_settled(self, i: int) -> dict:
        ev = f"KXSETTLED{i // 10}-24JAN01"
        return {"ticker": f"{ev}-T{i % 10}", "event_ticker": ev, "market_type": "binary",
                "title": f"Settled simulated market {i}?", "status": "settled",
                "result": "no", "close_time": "2024-01-01T23:59:00Z"}

    def kalshi_page(self, offset: int, limit: int, status: str | None) -> bytes:
        markets: Sequence = self.u.kalshi
        if status:
            want = {"open": "active"}.get(status, status)
            markets = [m for m in markets if m.status == want]
        extra = self.sc.listed_closed if status in (None, "settled") else 0
        listing = Listing(extra, self._kalshi_settled, markets, self._kalshi_market)
        cursor = _cursor(offset + limit) if offset + limit < len(listing) else ""
        return orjson.dumps({"cursor": cursor, "markets": listing.page(offset, limit)})
