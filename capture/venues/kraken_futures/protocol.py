"""Kraken Futures WebSocket v1 (public feeds), sans-I/O.

Messages we send::

    {"event":"subscribe","feed":"book","product_ids":["PF_XBTUSD"]}
    {"event":"unsubscribe","feed":"book","product_ids":["PF_XBTUSD"]}
    {"event":"subscribe","feed":"heartbeat"}

Frames we receive::

    {"event":"info","version":1}                               first frame
    {"event":"subscribed","feed":"book","product_ids":["PF_XBTUSD"]}   one per product
    {"event":"error","message":"Invalid product id"}
    {"feed":"heartbeat","time":1612269825817}
    {"feed":"book_snapshot","product_id":..,"timestamp":..,"seq":..,"bids":[..],"asks":[..]}
    {"feed":"book","product_id":..,"side":"sell","seq":..,"price":..,"qty":..,"timestamp":..}
    {"feed":"trade_snapshot","product_id":..,"trades":[..]}  then {"feed":"trade",..}
    {"feed":"ticker","product_id":..,"time":..,..}

Control frames carry ``event``; data frames carry ``feed`` and
``product_id``.  ``seq`` numbers one book subscription (snapshot then
deltas); a gap means: resubscribe for a fresh snapshot.  The client must send
something at least every 60 s; WebSocket ping frames are enough.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from common.errors import ConfigError

from capture.venues.base import (CONTROL_MAX, Classified, HEAD, Keepalive, Kind, RouteKey, SeqInfo, SeqLayout, VenueDefaults, as_list, dumps, epoch_to_ns, loads_small, lstrip_ws, scan_int, scan_str, value_at)
from capture.venues.kraken_futures import discovery
from capture.venues.kraken_futures.subscriber import FuturesSubscriber

URL = "wss://futures.kraken.com/ws/v1"
DEMO_URL = "wss://demo-futures.kraken.com/ws/v1"
FEEDS = frozenset({"ticker", "ticker_lite", "trade", "book", "heartbeat"})
_PRODUCT_FEEDS = FEEDS - {"heartbeat"}

_K_EVENT = b'"event"'
_K_FEED = b'"feed"'
_K_PRODUCT = b'"product_id"'
_K_SEQ = b'"seq"'


def channel_of(feed: str) -> str:
    """``book_snapshot`` -> ``book``: snapshots share their feed's subject."""
    return feed.removesuffix("_snapshot")


def _from_obj(msg: object) -> Classified:
    if not isinstance(msg, dict):
        return Classified(Kind.UNKNOWN)
    event = msg.get("event")
    feed = msg.get("feed") if isinstance(msg.get("feed"), str) else None
    if isinstance(event, str):
        pids = msg.get("product_ids")
        symbol = pids[0] if isinstance(pids, list) and pids and isinstance(pids[0], str) else None
        if event == "subscribed":
            return Classified(Kind.ACK, feed, symbol)
        if event == "unsubscribed":
            return Classified(Kind.UNSUBSCRIBED, feed, symbol)
        if event in ("error", "alert", "subscribed_failed", "unsubscribed_failed"):
            return Classified(Kind.ERROR, feed, symbol, detail=str(msg.get("message", event)))
        return Classified(Kind.INFO, feed, symbol, detail=event)
    if feed == "heartbeat":
        return Classified(Kind.HEARTBEAT, feed)
    if feed is not None:
        pid = msg.get("product_id")
        return Classified(Kind.DATA, channel_of(feed), pid if isinstance(pid, str) else None)
    return Classified(Kind.UNKNOWN)


def classify(raw: bytes) -> Classified:
    """What a received frame is.  Cheap: data frames are never parsed."""
    i = lstrip_ws(raw)
    if i >= len(raw) or raw[i] != 0x7B:
        return Classified(Kind.MALFORMED)
    if value_at(raw, _K_EVENT, i, i + HEAD) < 0:
        # ticker frames put "feed" mid-object, so look past the head too.
        feed = scan_str(raw, _K_FEED, i)
        if feed == "heartbeat":
            return Classified(Kind.HEARTBEAT, feed)
        if feed is not None:
            return Classified(Kind.DATA, channel_of(feed), scan_str(raw, _K_PRODUCT, i))
    if len(raw) > CONTROL_MAX:
        return Classified(Kind.UNKNOWN)
    msg = loads_small(raw)
    return Classified(Kind.MALFORMED) if msg is None else _from_obj(msg)


def route(raw: bytes) -> RouteKey | None:
    """``(feed without _snapshot, product_id)``; ``None`` for control or garbage."""
    i = lstrip_ws(raw)
    if i >= len(raw) or raw[i] != 0x7B or value_at(raw, _K_EVENT, i, i + HEAD) >= 0:
        return None
    feed = scan_str(raw, _K_FEED, i)
    if feed is None or feed == "heartbeat":
        return None
    pid = scan_str(raw, _K_PRODUCT, i)
    return None if pid is None else RouteKey(channel_of(feed), pid)


def sequence(raw: bytes) -> SeqInfo | None:
    """``seq`` of a book frame, keyed by ``("book", product_id)``."""
    i = lstrip_ws(raw)
    if i >= len(raw) or raw[i] != 0x7B:
        return None
    feed = scan_str(raw, _K_FEED, i)
    if feed not in ("book", "book_snapshot"):
        return None
    pid = scan_str(raw, _K_PRODUCT, i)
    seq = scan_int(raw, _K_SEQ, i)
    if pid is None or seq is None:
        return None
    return SeqInfo(("book", pid), seq, feed == "book_snapshot", pid)


def exchange_ts_ns(raw: bytes) -> int | None:
    """``timestamp`` (book) or ``time`` (ticker, trade), epoch ms, in ns."""
    v = scan_int(raw, b'"timestamp"')
    if v is None:
        v = scan_int(raw, b'"time"')
    return None if v is None else epoch_to_ns(v)


#: The receiver's hot-path form of :func:`sequence` (see
#: :class:`capture.venues.base.SeqLayout`): the documented head
#: ``{"feed":"book[_snapshot]","product_id":"..",`` then scalar members
#: (``side``, ``timestamp``; no nested object or array, so the ``"seq":``
#: found is a top-level key: inside a JSON string every quote is escaped)
#: within 96 bytes before ``"seq":N``; a frame without ``"book`` carries no
#: book sequence.  Stream key: ``("book", product_id)``.
SEQ_LAYOUT = SeqLayout(
    head=re.compile(
        rb'\{(?:"time":[0-9]{1,19},)?"feed":"(?:book(_snapshot)?",'
        rb'"product_id":"([A-Za-z0-9_:.\-]{1,64})",[^{}\[\]]{0,96}?'
        rb'"seq":([0-9]{1,19})[,}]|(?!book))'),
    hint=b'"book',
    canonical=lambda k: ("book", k.decode()),
    key_bytes=lambda k: str(k[1]).encode())  # type: ignore[index]


class KrakenFutures(VenueDefaults):
    """Message builders for one connection (the protocol has no request ids)."""

    name = "kraken_futures"
    default_channels = ("book", "trade", "ticker")
    channels = FEEDS
    channels_configurable = True
    per_connection = 50
    needs_key = False
    checksum_validator = False
    url = URL
    demo_url = DEMO_URL
    #: The venue closes a connection silent for 60 s; WebSocket pings every 30 s.
    keepalive = Keepalive(client_ping_interval=30.0, app_ping=False, server_heartbeat=None,
                          must_send_within=60.0)

    subscriber = FuturesSubscriber
    discover = staticmethod(discovery.discover)
    rest_url = discovery.REST
    rest_path = "/derivatives/api/v3"
    seq_layout = SEQ_LAYOUT

    classify = staticmethod(classify)
    route = staticmethod(route)
    sequence = staticmethod(sequence)
    exchange_ts_ns = staticmethod(exchange_ts_ns)

    @staticmethod
    def _msg(event: str, feed: str, product_ids: Iterable[str] | str) -> bytes:
        if feed not in FEEDS:
            raise ConfigError(None, "feed", f"unknown Kraken Futures feed {feed!r}")
        msg: dict = {"event": event, "feed": feed}
        if feed in _PRODUCT_FEEDS:
            pids = as_list(product_ids)
            if not pids:
                raise ConfigError(None, "product_ids", f"no product ids for feed {feed!r}")
            msg["product_ids"] = pids
        return dumps(msg)

    def subscribe(self, feed: str, product_ids: Iterable[str] | str = ()) -> bytes:
        """The venue acks each product separately (``event: subscribed``).

        Raises:
            ConfigError: unknown feed or no product ids.
        """
        return self._msg("subscribe", feed, product_ids)

    def unsubscribe(self, feed: str, product_ids: Iterable[str] | str = ()) -> bytes:
        return self._msg("unsubscribe", feed, product_ids)


__all__ = ["URL", "DEMO_URL", "FEEDS", "KrakenFutures", "classify", "route", "sequence",
           "exchange_ts_ns", "channel_of"]
