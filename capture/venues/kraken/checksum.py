"""Kraken spot WebSocket v2 book checksum, from the exact digits received.

The algorithm (Kraken's documentation, "Book checksum", v2):

1. take the top 10 asks, lowest price first, then the top 10 bids, highest
   price first;
2. for each level write the price, then the quantity, each as the decimal
   text the venue sent with the ``.`` removed and leading zeros stripped
   (``"0.10000000"`` -> ``"10000000"``, ``"4.20"`` -> ``"420"``);
3. CRC32 (``zlib.crc32``) of the concatenation is the unsigned 32-bit value
   in the message's ``checksum`` field.

Why strings and never floats: the venue sends each pair with a fixed
precision, and the trailing zeros are part of the checksummed text.  A float
(or orjson, which yields floats) turns ``0.10000000`` into ``0.1`` and the
checksum no longer matches.  So :func:`parse_book_frame` uses the stdlib
``json`` with ``parse_float=str`` / ``parse_int=str``, which hands back the
literal text of every number; prices are compared as :class:`~decimal.Decimal`
(exact) but stored and checksummed as the original strings.

Precision: the venue checksums each number at the pair's fixed precision
(``pair_decimals`` / ``lot_decimals`` of AssetPairs, ``price_precision`` /
``qty_precision`` of the instrument channel).  Text that lost trailing zeros
on the way (a float round trip: Kraken's own book documentation prints
``0.566`` for ``0.5660``, and its example checksums only come out with the
zeros put back) checksums falsely.  Given a pair's precision, :class:`Book`
pads each number's fraction to it before taking the digits; without one the
received text is used as is (Kraken sends full precision on the wire).

Per-pair opt-out: other client libraries turned validation off by default
after false mismatches on low-priced pairs.  We keep validating, but
:class:`Books` takes the symbols not to validate (``skip``): their frames
are not checked and never reported.

This runs off the receive path (a separate ring reader keeps the books), so
clarity beats speed here.
"""
from __future__ import annotations

import json
import re
import zlib
from bisect import bisect_left, insort
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from common.errors import BookFormatError

from capture.venues.base import ChecksumSpec

CHECKSUM_LEVELS = 10
DEPTHS = (10, 25, 100, 500, 1000)

Level = tuple[str, str]  # (price text, qty text) exactly as received


def digits(text: str) -> str:
    """``'0.00012300'`` -> ``'12300'``: drop the point, strip leading zeros.

    Raises:
        BookFormatError: exponent notation (the venue's precision is lost).
    """
    if "e" in text or "E" in text:
        raise BookFormatError(f"number in exponent form {text!r}: exact digits unknown")
    return text.replace(".", "").lstrip("0")


def pad(text: str, decimals: int | None) -> str:
    """``text`` with its fraction padded with zeros to ``decimals`` digits
    (``'0.566'``, 4 -> ``'0.5660'``).  Never rounds: text with more digits
    than ``decimals`` is returned unchanged (it is the venue's exact text)."""
    if decimals is None or decimals <= 0:
        return text
    dot = text.find(".")
    have = 0 if dot < 0 else len(text) - dot - 1
    if have >= decimals:
        return text
    return (text if dot >= 0 else text + ".") + "0" * (decimals - have)


def checksum(asks: Iterable[Level], bids: Iterable[Level],
             precision: tuple[int | None, int | None] = (None, None)) -> int:
    """CRC32 of the top levels; ``asks`` low->high, ``bids`` high->low.

    Only the first :data:`CHECKSUM_LEVELS` of each side are used.
    ``precision``: the pair's ``(price decimals, qty decimals)`` when known.
    """
    pd, qd = precision
    parts: list[str] = []
    for side in (asks, bids):
        for n, (price, qty) in enumerate(side):
            if n == CHECKSUM_LEVELS:
                break
            parts.append(digits(pad(price, pd)))
            parts.append(digits(pad(qty, qd)))
    return zlib.crc32("".join(parts).encode("ascii"))


def _text(v: object) -> str:
    """A price/qty as text: JSON numbers arrive as literal text, strings as-is."""
    if isinstance(v, str):
        return v
    raise BookFormatError(f"price/qty {v!r} is not exact text")


def _decimal(text: str) -> Decimal:
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise BookFormatError(f"not a decimal number: {text!r}") from None
    if not d.is_finite():
        raise BookFormatError(f"not a finite number: {text!r}")
    return d


class _Side:
    """One side of a book: sorted keys (best first) and the exact texts."""

    __slots__ = ("_keys", "_levels", "_sign")

    def __init__(self, descending: bool) -> None:
        self._sign = -1 if descending else 1
        self._keys: list[Decimal] = []                 # sign * price, ascending
        self._levels: dict[Decimal, Level] = {}

    def clear(self) -> None:
        self._keys.clear()
        self._levels.clear()

    def apply(self, price: str, qty: str) -> None:
        key = self._sign * _decimal(price)
        if _decimal(qty) == 0:
            if key in self._levels:
                del self._levels[key]
                del self._keys[bisect_left(self._keys, key)]
            return
        if key not in self._levels:
            insort(self._keys, key)
        self._levels[key] = (price, qty)

    def truncate(self, depth: int) -> None:
        while len(self._keys) > depth:
            del self._levels[self._keys.pop()]

    def top(self, n: int) -> list[Level]:
        return [self._levels[k] for k in self._keys[:n]]

    def __len__(self) -> int:
        return len(self._keys)


class Book:
    """One symbol's book at a subscribed depth, kept from exact strings.

    Updates are applied in message order (qty ``0`` deletes a level), then
    the book is truncated to ``depth`` as the venue does before it computes
    its checksum.
    """

    __slots__ = ("symbol", "depth", "asks", "bids", "precision")

    def __init__(self, symbol: str = "", depth: int = 10,
                 precision: tuple[int | None, int | None] = (None, None)) -> None:
        if depth < CHECKSUM_LEVELS:
            raise ValueError(f"depth {depth} is below the {CHECKSUM_LEVELS} checksum levels")
        self.symbol = symbol
        self.depth = depth
        self.precision = precision
        self.asks = _Side(descending=False)
        self.bids = _Side(descending=True)

    def snapshot(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        self.asks.clear()
        self.bids.clear()
        self.update(bids, asks)

    def update(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        for price, qty in bids:
            self.bids.apply(price, qty)
        for price, qty in asks:
            self.asks.apply(price, qty)
        self.bids.truncate(self.depth)
        self.asks.truncate(self.depth)

    def top(self, n: int = CHECKSUM_LEVELS) -> tuple[list[Level], list[Level]]:
        """``(bids high->low, asks low->high)``, ``n`` levels each."""
        return self.bids.top(n), self.asks.top(n)

    def checksum(self) -> int:
        return checksum(self.asks.top(CHECKSUM_LEVELS), self.bids.top(CHECKSUM_LEVELS),
                        self.precision)


# --------------------------------------------------------------------------
# Whole frames
# --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BookItem:
    """One element of a book frame's ``data`` array, numbers as exact text."""

    symbol: str
    snapshot: bool
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    checksum: int | None


def _levels(items: object, symbol: str) -> tuple[Level, ...]:
    if items is None:
        return ()
    if not isinstance(items, list):
        raise BookFormatError("bids/asks is not a list", symbol)
    out = []
    for lv in items:
        if not isinstance(lv, dict) or "price" not in lv or "qty" not in lv:
            raise BookFormatError(f"bad level {lv!r}", symbol)
        out.append((_text(lv["price"]), _text(lv["qty"])))
    return tuple(out)


def parse_book_frame(raw: bytes) -> list[BookItem] | None:
    """Parse a Kraken v2 ``book`` frame keeping every number's text.

    Returns ``None`` for frames that are not book snapshots/updates.

    Raises:
        BookFormatError: a book frame whose contents cannot be used.
    """
    try:
        msg = json.loads(raw, parse_float=str, parse_int=str)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(msg, dict) or msg.get("channel") != "book":
        return None
    kind = msg.get("type")
    if kind not in ("snapshot", "update"):
        return None
    data = msg.get("data")
    if not isinstance(data, list):
        raise BookFormatError("data is not a list")
    out = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("symbol"), str):
            raise BookFormatError("book item without symbol")
        sym = item["symbol"]
        cs = item.get("checksum")
        try:
            cs_int = None if cs is None else int(cs)
        except (TypeError, ValueError):
            raise BookFormatError(f"bad checksum {cs!r}", sym) from None
        out.append(BookItem(sym, kind == "snapshot", _levels(item.get("bids"), sym),
                            _levels(item.get("asks"), sym), cs_int))
    return out


@dataclass(frozen=True, slots=True)
class ChecksumResult:
    """Outcome of checking one book item: ``computed`` is ``None`` if the
    symbol had no snapshot yet (nothing to compare)."""

    symbol: str
    expected: int | None
    computed: int | None

    @property
    def ok(self) -> bool:
        return self.expected is None or self.computed is None or self.expected == self.computed


class Books:
    """Books of many symbols fed with raw frames: the checksum validator.

    After a mismatch the symbol's book is dropped (it is wrong until the
    resubscription's snapshot arrives), so one corruption is reported once,
    not on every following update.
    """

    def __init__(self, depth: int = 10,
                 precisions: dict[str, tuple[int | None, int | None]] | None = None,
                 skip: Iterable[str] = ()) -> None:
        """``precisions``: symbol -> (price decimals, qty decimals) where known;
        ``skip``: symbols whose checksums are not validated (the opt-out)."""
        self.depth = depth
        self.books: dict[str, Book] = {}
        self.precisions = dict(precisions or {})
        self.skip = frozenset(skip)

    def feed(self, raw: bytes) -> list[ChecksumResult]:
        items = parse_book_frame(raw)
        if not items:
            return []
        results = []
        for it in items:
            if it.symbol in self.skip:
                continue
            book = self.books.get(it.symbol)
            if it.snapshot:
                book = self.books[it.symbol] = Book(
                    it.symbol, self.depth, self.precisions.get(it.symbol, (None, None)))
                book.snapshot(it.bids, it.asks)
            elif book is None:
                results.append(ChecksumResult(it.symbol, it.checksum, None))
                continue
            else:
                book.update(it.bids, it.asks)
            computed = book.checksum()
            results.append(ChecksumResult(it.symbol, it.checksum, computed))
            if it.checksum is not None and computed != it.checksum:
                del self.books[it.symbol]
        return results

    def drop(self, symbol: str) -> None:
        self.books.pop(symbol, None)


#: A Kraken v2 book frame names its channel first; search only the head.
_BOOK_HEAD = re.compile(rb'"channel"[ \t\r\n]*:[ \t\r\n]*"book"')
_HEAD = 64


def is_book_frame(payload: bytes | memoryview) -> bool:
    """A book frame (snapshot or update), by its head alone."""
    return _BOOK_HEAD.search(payload[:_HEAD]) is not None


#: The venue's ``checksums`` trait: what the validator process runs.
SPEC = ChecksumSpec(books=Books, depths=DEPTHS, is_book_frame=is_book_frame,
                    format_error=BookFormatError)
