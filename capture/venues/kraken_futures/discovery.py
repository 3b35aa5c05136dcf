"""Kraken Futures instrument discovery: ``GET /instruments`` (one call),
tradeable product ids upper-cased."""
from __future__ import annotations

from dataclasses import dataclass

from capture.venues.discovery import (BadPage, RetryPolicy, Units, fetch_page, loads, symbol_units, truthy)

REST = "https://futures.kraken.com/derivatives/api/v3"


@dataclass(frozen=True, slots=True)
class FuturesInstrument:
    symbol: str          # product id as the WebSocket wants it, e.g. PF_XBTUSD
    type: str | None


def parse_futures_instruments(body: bytes | dict) -> list[FuturesInstrument]:
    """``GET /instruments`` -> tradeable instruments, product ids upper-cased.

    Raises:
        BadPage: not the instruments shape or ``result`` is not success.
    """
    doc = loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("instruments"), list):
        raise BadPage("Futures instruments: no instruments list")
    if doc.get("result", "success") != "success":
        raise BadPage(f"Futures instruments: result {doc.get('result')!r}: {doc.get('error')}")
    out: dict[str, FuturesInstrument] = {}
    for ins in doc["instruments"]:
        if not isinstance(ins, dict) or not isinstance(ins.get("symbol"), str):
            continue
        if not truthy(ins.get("tradeable", True)):
            continue
        sym = ins["symbol"].upper()
        typ = ins.get("type")
        out.setdefault(sym, FuturesInstrument(sym, typ if isinstance(typ, str) else None))
    return [out[k] for k in sorted(out)]


async def fetch_futures_instruments(base_url: str = REST, *,
                                    policy: RetryPolicy = RetryPolicy()
                                    ) -> list[FuturesInstrument]:
    """Tradeable Kraken Futures product ids.  Raises DiscoveryError."""
    return await fetch_page(f"{base_url.rstrip('/')}/instruments",
                            parse_futures_instruments, policy)


async def discover(base_url: str | None = None) -> Units:
    """One unit per tradeable product.  Raises DiscoveryError."""
    return symbol_units(i.symbol for i in await fetch_futures_instruments(base_url or REST))
