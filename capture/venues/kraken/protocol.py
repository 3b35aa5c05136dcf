"""Kraken spot WebSocket v2 (public market data), sans-I/O.

Messages we send::

    {"method":"subscribe","params":{"channel":"book","symbol":["BTC/USD"],
     "depth":10,"snapshot":true},"req_id":1}
    {"method":"unsubscribe","params":{...same keys...},"req_id":2}
    {"method":"ping","req_id":3}

Frames we receive (one JSON object per frame)::

    {"method":"subscribe","result":{"channel":..,"symbol":..},"success":true,"req_id":1,..}
    {"method":"subscribe","error":"Currency pair not supported","success":false,"symbol":..}
    {"method":"pong","req_id":3,..}
    {"channel":"heartbeat"}
    {"channel":"status","type":"update","data":[{"system":"online",..}]}
    {"channel":"book"|"ticker"|"trade","type":"snapshot"|"update","data":[{"symbol":..,..}]}

    {"Error":"Exceeded msg rate"}        the bare rate-limit refusal (capital E)

Control replies carry a ``method`` key; data frames never do, and put
``channel`` first and ``symbol`` first in the data item.  That is what the
cheap paths rely on; anything else that is small gets parsed.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from common.errors import ConfigError

from capture.venues.base import (CONTROL_MAX, Classified, HEAD, Keepalive, Kind, RouteKey, SeqInfo, VenueDefaults, as_list, dumps, loads_small, lstrip_ws, rfc3339_to_ns, scan_str, scan_str_head_tail, value_at)
from capture.venues.kraken import discovery
from capture.venues.kraken.subscriber import KrakenSubscriber
from capture.venues.kraken import checksum
from capture.venues.kraken.checksum import DEPTHS

URL = "wss://ws.kraken.com/v2"
#: Error texts meaning "too many requests on this connection, send it again
#: later" (both the ``error`` and the bare ``Error`` form carry this text).
RATE_LIMIT_ERRORS = ("Exceeded msg rate",)
CHANNELS = frozenset({"ticker", "trade", "book", "instrument"})
#: Channels whose frames are protocol chatter, not market data.
_CONTROL_CHANNELS = {"heartbeat": Kind.HEARTBEAT, "status": Kind.INFO}

_K_METHOD = b'"method"'
_K_CHANNEL = b'"channel"'
_K_SYMBOL = b'"symbol"'
_K_TIMESTAMP = b'"timestamp"'


def _str(v: object) -> str | None:
    return v if isinstance(v, str) else None


def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _first_item(msg: dict) -> dict:
    data = msg.get("data")
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return data[0]
    return {}


def _from_obj(msg: object) -> Classified:
    """Classify a parsed (small) frame."""
    if not isinstance(msg, dict):
        return Classified(Kind.UNKNOWN)
    req_id = _int(msg.get("req_id"))
    method = msg.get("method")
    if method is not None:
        result = msg.get("result") if isinstance(msg.get("result"), dict) else {}
        channel = _str(result.get("channel"))
        symbol = _str(result.get("symbol")) or _str(msg.get("symbol"))
        if msg.get("success") is False or "error" in msg:
            return Classified(Kind.ERROR, channel, symbol, req_id,
                              detail=str(msg.get("error", "")))
        if method == "subscribe":
            return Classified(Kind.ACK, channel, symbol, req_id)
        if method == "unsubscribe":
            return Classified(Kind.UNSUBSCRIBED, channel, symbol, req_id)
        if method == "pong":
            return Classified(Kind.PONG, req_id=req_id)
        return Classified(Kind.INFO, channel, symbol, req_id, detail=_str(method))
    channel = _str(msg.get("channel"))
    if channel is not None:
        if channel in _CONTROL_CHANNELS:
            return Classified(_CONTROL_CHANNELS[channel], channel,
                              detail=_str(_first_item(msg).get("system")))
        return Classified(Kind.DATA, channel, _str(_first_item(msg).get("symbol")))
    # The rate-limit refusal also comes bare and with a capital E,
    # {"Error": "Exceeded msg rate"} (spot rate-limit guide, read 2026-12-06).
    for key in ("error", "Error"):
        if key in msg:
            return Classified(Kind.ERROR, req_id=req_id, detail=str(msg[key]))
    return Classified(Kind.UNKNOWN)


def classify(raw: bytes) -> Classified:
    """What a received frame is.  Cheap: data frames are never parsed."""
    i = lstrip_ws(raw)
    if i >= len(raw) or raw[i] != 0x7B:  # '{'
        return Classified(Kind.MALFORMED)
    if value_at(raw, _K_METHOD, i, i + HEAD) < 0:
        channel = scan_str(raw, _K_CHANNEL, i, i + HEAD)
        if channel is not None:
            kind = _CONTROL_CHANNELS.get(channel)
            if kind is None:
                symbol = "all" if channel == "instrument" else scan_str(raw, _K_SYMBOL, i)
                return Classified(Kind.DATA, channel, symbol)
            if kind is Kind.HEARTBEAT:
                return Classified(kind, channel)
    if len(raw) > CONTROL_MAX:
        return Classified(Kind.UNKNOWN)
    msg = loads_small(raw)
    return Classified(Kind.MALFORMED) if msg is None else _from_obj(msg)


# The layout of every data frame in Kraken's v2 docs and SDK examples,
# compact, channel first: {"channel":"book","type":"update","data":[{"symbol":
# "BTC/USD",...  One match of it answers ``route`` for nearly every frame
# (the publisher routes each frame, and the general scan below costs about
# four times as much); anything else (whitespace, another key order, an
# escape in the symbol, a "method" key in the head) takes the general path,
# which gives the same answer for the frames the pattern matches.
_DATA_HEAD = re.compile(rb'\{"channel":"([a-z0-9_]+)","type":"[a-z]+","data":\[\{"symbol":"([^"\\]*)"')
_FAST_CHANNELS = {c.encode(): c for c in CHANNELS - {"instrument"}}


def route(raw: bytes) -> RouteKey | None:
    """``(channel, symbol)`` of a data frame; ``None`` for control or garbage.

    Reads ``channel`` from the head and the first ``symbol`` key; does not
    validate the rest of the frame.
    """
    m = _DATA_HEAD.match(raw)
    if m is not None and raw.find(_K_METHOD, 0, HEAD + 8) < 0:
        channel = _FAST_CHANNELS.get(m.group(1))
        if channel is not None:
            try:
                return RouteKey(channel, m.group(2).decode())
            except UnicodeDecodeError:
                return None
    return _route_scan(raw)


def _route_scan(raw: bytes) -> RouteKey | None:
    """``route`` for any layout: key by key, whitespace and escapes allowed."""
    i = lstrip_ws(raw)
    if i >= len(raw) or raw[i] != 0x7B:
        return None
    if value_at(raw, _K_METHOD, i, i + HEAD) >= 0:
        return None
    channel = scan_str(raw, _K_CHANNEL, i, i + HEAD) or scan_str(raw, _K_CHANNEL, i)
    if channel is None or channel in _CONTROL_CHANNELS:
        return None
    if channel == "instrument":  # one frame lists every pair
        return RouteKey(channel, "all")
    symbol = scan_str(raw, _K_SYMBOL, i)
    return None if symbol is None else RouteKey(channel, symbol)


def sequence(raw: bytes) -> SeqInfo | None:
    """Kraken spot v2 has no per-subscription sequence numbers (books carry
    checksums instead; see :mod:`.checksum`)."""
    return None


def exchange_ts_ns(raw: bytes) -> int | None:
    """The RFC 3339 ``timestamp`` of a data frame, in ns since the epoch."""
    ts = scan_str_head_tail(raw, _K_TIMESTAMP)
    return None if ts is None else rfc3339_to_ns(ts)


class KrakenSpot(VenueDefaults):
    """Message builders for one connection (holds the ``req_id`` counter)."""

    name = "kraken"
    default_channels = ("book", "trade", "ticker")
    channels = CHANNELS
    channels_configurable = True
    per_connection = 50
    needs_key = False
    checksum_validator = True
    url = URL
    demo_url = None
    #: Server heartbeats about once a second while subscribed; an app-level
    #: ping is optional, we send one every 30 s to measure round trips.
    keepalive = Keepalive(client_ping_interval=30.0, app_ping=True, server_heartbeat=1.0)

    subscriber = KrakenSubscriber
    discover = staticmethod(discovery.discover)
    rest_url = discovery.REST
    checksums = checksum.SPEC

    classify = staticmethod(classify)
    route = staticmethod(route)
    sequence = staticmethod(sequence)
    exchange_ts_ns = staticmethod(exchange_ts_ns)
    rate_limit_errors = RATE_LIMIT_ERRORS

    @staticmethod
    def rate_limited(detail: str | None) -> bool:
        """The venue refused a request for the connection's message rate."""
        return detail is not None and any(e in detail for e in RATE_LIMIT_ERRORS)

    def __init__(self, first_req_id: int = 1) -> None:
        self._req_id = first_req_id

    def next_req_id(self) -> int:
        rid = self._req_id
        self._req_id += 1
        return rid

    def _params(self, channel: str, symbols: Iterable[str] | str,
                depth: int | None, snapshot: bool | None) -> dict:
        if channel not in CHANNELS:
            raise ConfigError(None, "channel", f"unknown Kraken channel {channel!r}")
        params: dict = {"channel": channel}
        if channel != "instrument":
            syms = as_list(symbols)
            if not syms:
                raise ConfigError(None, "symbols", f"no symbols for channel {channel!r}")
            params["symbol"] = syms
        if channel == "book" and depth is not None:
            if depth not in DEPTHS:
                raise ConfigError(None, "depth", f"book depth {depth} not one of {DEPTHS}")
            params["depth"] = depth
        if snapshot is not None:
            params["snapshot"] = snapshot
        return params

    def subscribe(self, channel: str, symbols: Iterable[str] | str = (), *,
                  depth: int = 10, snapshot: bool = True, req_id: int | None = None) -> bytes:
        """Subscribe ``symbols`` (v2 names, ``BTC/USD``) to ``channel``.

        The venue acks every symbol separately with the same ``req_id``.

        Raises:
            ConfigError: unknown channel, no symbols, unsupported depth.
        """
        params = self._params(channel, symbols, depth, snapshot)
        rid = self.next_req_id() if req_id is None else req_id
        return dumps({"method": "subscribe", "params": params, "req_id": rid})

    def unsubscribe(self, channel: str, symbols: Iterable[str] | str = (), *,
                    depth: int | None = None, req_id: int | None = None) -> bytes:
        """Unsubscribe; pass the ``depth`` used at subscription for ``book``."""
        params = self._params(channel, symbols, depth, None)
        rid = self.next_req_id() if req_id is None else req_id
        return dumps({"method": "unsubscribe", "params": params, "req_id": rid})

    def ping(self, req_id: int | None = None) -> bytes:
        rid = self.next_req_id() if req_id is None else req_id
        return dumps({"method": "ping", "req_id": rid})
