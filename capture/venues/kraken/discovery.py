"""Kraken spot instrument discovery: ``GET /0/public/AssetPairs`` (one call),
or the v2 ``instrument`` channel snapshot; symbols in their v2 spelling."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from capture.venues.discovery import (BadPage, RetryPolicy, Units, fetch_page, loads, symbol_units)

REST = "https://api.kraken.com"

#: Kraken's v1 asset codes that v2 symbols spell differently.
KRAKEN_V2_NAMES = {"XBT": "BTC", "XDG": "DOGE"}


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
    doc = loads(body)
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
    doc = loads(body)
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

async def fetch_kraken_pairs(base_url: str = REST, *, statuses: Iterable[str] = ("online",),
                             policy: RetryPolicy = RetryPolicy()) -> list[KrakenPair]:
    """All Kraken spot pairs (one call) as v2 symbols.  Raises DiscoveryError."""
    wanted = tuple(statuses)
    return await fetch_page(f"{base_url.rstrip('/')}/0/public/AssetPairs",
                            lambda b: parse_kraken_asset_pairs(b, wanted), policy)



async def discover(base_url: str | None = None) -> Units:
    """One unit per online pair.  Raises DiscoveryError."""
    return symbol_units(p.symbol for p in await fetch_kraken_pairs(base_url or REST))
