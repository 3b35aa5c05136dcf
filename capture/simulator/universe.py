"""The instruments each simulated venue lists, deterministic from the seed.

One universe feeds both the WebSocket servers (what may be subscribed) and the
REST discovery endpoints (what is listed), so discovery and subscription agree
the way they do at the real venues.  Well-known names come first so tests can
rely on them (``BTC/USD``, ``PF_XBTUSD``, ...); the rest is generated.
"""
from __future__ import annotations

import string
from dataclasses import dataclass

from capture.simulator.values import rng


@dataclass(frozen=True)
class KrakenPair:
    symbol: str          # v2 name, "BTC/USD"
    wsname: str          # v1 name, "XBT/USD"
    key: str             # AssetPairs key, "XXBTZUSD"
    altname: str         # "XBTUSD"
    base: str            # AssetPairs asset codes, "XXBT"
    quote: str           # "ZUSD"
    price_decimals: int
    qty_decimals: int
    mid: int             # mid price in units of 10**-price_decimals
    status: str          # online / cancel_only / post_only / reduce_only


@dataclass(frozen=True)
class FuturesProduct:
    symbol: str          # "PF_XBTUSD"
    pair: str            # "XBT:USD"
    price_decimals: int
    mid: int
    tag: str             # "perpetual"
    tradeable: bool


@dataclass(frozen=True)
class PolyMarket:
    condition_id: str            # 0x + 64 hex
    question: str
    slug: str
    outcomes: tuple[str, str]
    token_ids: tuple[str, str]   # long decimal strings, in outcomes order
    active: bool
    closed: bool
    tick_decimals: int           # 2 -> tick 0.01, 3 -> tick 0.001


@dataclass(frozen=True)
class KalshiMarket:
    ticker: str
    event_ticker: str
    title: str
    status: str          # "active" (listed by status=open), "closed", "settled"


# (v2 base, v1 base, AssetPairs base, price decimals, mid as a decimal string)
_KRAKEN_KNOWN = [
    ("BTC", "XBT", "XXBT", 1, "97000.0"),
    ("ETH", "ETH", "XETH", 2, "3500.00"),
    ("DOGE", "XDG", "XXDG", 7, "0.1500000"),
    ("SOL", "SOL", "SOL", 2, "150.00"),
    ("SHIB", "SHIB", "SHIB", 8, "0.00002000"),
    ("XRP", "XRP", "XXRP", 5, "0.60000"),
    ("ADA", "ADA", "ADA", 6, "0.450000"),
]
_STATUSES = ("cancel_only", "post_only", "reduce_only")


def _units(dec: str) -> int:
    return int(dec.replace(".", ""))


def _name(r, used: set[str], lo: int = 3, hi: int = 5) -> str:
    while True:
        n = "".join(r.choice(string.ascii_uppercase) for _ in range(r.randint(lo, hi)))
        if n not in used:
            used.add(n)
            return n


def kraken_pairs(seed: int, n: int) -> list[KrakenPair]:
    out: list[KrakenPair] = []
    for base, v1, code, pdec, mid in _KRAKEN_KNOWN:
        quote_code = "ZUSD" if code.startswith("X") else "USD"
        out.append(KrakenPair(f"{base}/USD", f"{v1}/USD", code + quote_code, f"{v1}USD",
                              code, "ZUSD", pdec, 8, _units(mid), "online"))
    r = rng(seed, "kraken", "universe")
    used = {p[0] for p in _KRAKEN_KNOWN} | {p[1] for p in _KRAKEN_KNOWN}
    i = 0
    while len(out) < n:
        base = _name(r, used)
        quote = r.choice(("USD", "EUR"))
        pdec = r.randint(2, 6)
        mid = r.randint(10 ** pdec, 10 ** (pdec + 3))
        # Some generated pairs are not fully tradeable, for status filters.
        status = _STATUSES[i // 4 % 3] if i % 4 == 3 else "online"
        out.append(KrakenPair(f"{base}/{quote}", f"{base}/{quote}", base + quote,
                              base + quote, base, quote, pdec, 8, mid, status))
        i += 1
    return out[:max(n, len(_KRAKEN_KNOWN))]


_FUTURES_KNOWN = [("PF_XBTUSD", "XBT:USD", 0, 97000), ("PF_ETHUSD", "ETH:USD", 1, 35000),
                  ("PF_SOLUSD", "SOL:USD", 2, 15000), ("PI_XBTUSD", "XBT:USD", 1, 970000),
                  ("PF_DOGEUSD", "DOGE:USD", 5, 15000)]


def futures_products(seed: int, n: int) -> list[FuturesProduct]:
    out = [FuturesProduct(s, p, d, m, "perpetual", True) for s, p, d, m in _FUTURES_KNOWN]
    r = rng(seed, "kraken_futures", "universe")
    used = {s.split("_")[1][:-3] for s, *_ in _FUTURES_KNOWN}
    while len(out) < n:
        base = _name(r, used)
        d = r.randint(1, 4)
        out.append(FuturesProduct(f"PF_{base}USD", f"{base}:USD", d,
                                  r.randint(10 ** d, 10 ** (d + 3)), "perpetual",
                                  len(out) % 6 != 5))
    return out


def poly_markets(seed: int, n: int) -> list[PolyMarket]:
    r = rng(seed, "polymarket", "universe")
    out = []
    for i in range(n):
        cond = "0x" + "%064x" % r.getrandbits(256)
        # Token ids are uint256 values printed in decimal (~77 digits).
        toks = tuple(str(r.getrandbits(255) | (1 << 250)) for _ in range(2))
        # Every 5th market is closed and every 7th inactive, for discovery filters.
        out.append(PolyMarket(cond, f"Will simulated event {i} happen?", f"sim-event-{i}",
                              ("Yes", "No"), toks,  # type: ignore[arg-type]
                              active=i % 7 != 6, closed=i % 5 == 4,
                              tick_decimals=3 if i % 3 == 2 else 2))
    return out


def kalshi_markets(seed: int, n: int) -> list[KalshiMarket]:
    known = [KalshiMarket("KXBTCD-26JAN01-T97000", "KXBTCD-26JAN01",
                          "Bitcoin above 97000 on Jan 1?", "active"),
             KalshiMarket("KXHIGHNY-26JAN01-B53.5", "KXHIGHNY-26JAN01",
                          "NYC high 53-54 on Jan 1?", "active")]
    r = rng(seed, "kalshi", "universe")
    out = list(known)
    used: set[str] = set()
    while len(out) < n:
        ev = "KX" + _name(r, used, 3, 6) + "-26JAN01"
        status = "closed" if len(out) % 6 == 5 else "active"
        out.append(KalshiMarket(f"{ev}-T{r.randint(1, 999)}", ev,
                                f"Simulated market {len(out)}?", status))
    return out


class Universe:
    """All four venues' instruments for one seed and size."""

    def __init__(self, seed: int, n: int) -> None:
        self.kraken = kraken_pairs(seed, n)
        self.futures = futures_products(seed, n)
        self.poly = poly_markets(seed, n)
        self.kalshi = kalshi_markets(seed, n)
        self.kraken_by_symbol = {p.symbol: p for p in self.kraken}
        self.futures_by_symbol = {p.symbol: p for p in self.futures}
        self.poly_by_token = {t: m for m in self.poly for t in m.token_ids}
        self.kalshi_by_ticker = {m.ticker: m for m in self.kalshi}

    def symbols(self, venue: str) -> list[str]:
        """What a client may subscribe to on ``venue`` (token ids for Polymarket)."""
        if venue == "kraken":
            return [p.symbol for p in self.kraken]
        if venue == "kraken_futures":
            return [p.symbol for p in self.futures]
        if venue == "polymarket":
            return [t for m in self.poly for t in m.token_ids]
        if venue == "kalshi":
            return [m.ticker for m in self.kalshi]
        raise KeyError(venue)
