"""Polymarket CLOB market channel, sans-I/O.

Messages we send (text frames)::

    {"assets_ids":["<token id>",..],"type":"market","custom_feature_enabled":true}   on connect
    {"assets_ids":[..],"operation":"subscribe"|"unsubscribe"}                        later
    PING                                                                            every ~10 s

Frames we receive::

    PONG
    {"event_type":"book","asset_id":..,"market":"0x..","bids":[..],"asks":[..],
     "timestamp":"<ms>",..}
    {"event_type":"price_change","market":"0x..","price_changes":[{"asset_id":..,..}],..}
    {"event_type":"last_trade_price"|"tick_size_change"|"best_bid_ask"|"new_market"|
     "market_resolved","market":"0x..",..}
    [ {event}, {event}, .. ]             the initial dump (books reach ~2 MiB)
    []                                   nothing to report

There are no subscription acks and no sequence numbers.  Routing is by
``market`` (the condition id), so the Yes and No tokens of one market share a
subject; :func:`route` answers an array frame by its first event
(:func:`split_events` by each event).  Book events put
``event_type`` *after* their level arrays, so the scanners look at the head,
then the tail (:func:`.base.scan_str_head_tail`), before a full ``find``.

Observed but undocumented: a malformed request is answered with a short
plain-text frame (e.g. ``INVALID OPERATION``); :func:`classify` reports such
text as :attr:`Kind.ERROR` with the text as detail.  ``NO NEW ASSETS`` (a
subscribe whose tokens were all subscribed already) is a notice, not a
refusal: :attr:`Kind.INFO` (:data:`TEXT_NOTICES`).

Arrays: the initial dump holds book events for *every* subscribed token, so
one frame spans many markets.  :func:`route` names the first event's market
(the cheap answer, right for single-market frames); :func:`split_events`
gives each event its own route key and bytes, so the layers above can send
each event where its market's subscribers listen while the frame on disk
stays as received.

Tokens per connection: above ~500 updates silently stop (observed), so the
default cap (:data:`DEFAULT_TOKENS_PER_CONNECTION`) keeps a margin below it;
a configured cap may not exceed :data:`MAX_TOKENS_PER_CONNECTION`.
"""
from __future__ import annotations

from collections.abc import Iterable

import orjson

from common.errors import ConfigError

from capture.venues.base import (CONTROL_MAX, Classified, Keepalive, Kind, RouteKey, SeqInfo, VenueDefaults, as_list, dumps, epoch_to_ns, loads_small, lstrip_ws, scan_str, scan_str_head_tail)
from capture.venues.polymarket import discovery
from capture.venues.polymarket.subscriber import PolymarketSubscriber

URL = "wss://ws-subscriptions-clob.polymarket.com/ws/market"
#: Above ~500 tokens on one connection updates silently stop (observed): the
#: hard ceiling a configured cap may reach.
MAX_TOKENS_PER_CONNECTION = 500
#: The default cap: 10% below the observed limit, so a limit that moves a
#: little (or counts differently from us) does not silence a connection.
DEFAULT_TOKENS_PER_CONNECTION = 450
#: Plain-text frames that are notices, not errors.
TEXT_NOTICES = frozenset({b"NO NEW ASSETS"})
PING = b"PING"
PONG = b"PONG"

_K_EVENT_TYPE = b'"event_type"'
_K_MARKET = b'"market"'
_K_TIMESTAMP = b'"timestamp"'
#: Plain-text error replies are short; longer non-JSON is garbage.
_TEXT_ERROR_MAX = 256


def _body(raw: bytes) -> tuple[int, int]:
    """``(first, kind)``: index of the first non-space byte and that byte (or -1)."""
    i = lstrip_ws(raw)
    return i, (raw[i] if i < len(raw) else -1)


def _first_event_start(raw: bytes, i: int) -> int:
    """For an array frame, index of the first event's ``{``; -1 if empty/garbage."""
    j = lstrip_ws(raw[i + 1:i + 65]) + i + 1
    return j if j < len(raw) and raw[j] == 0x7B else -1


def _scan(raw: bytes, key: bytes, i: int, is_array: bool) -> str | None:
    # An object: the key may be at the head or the tail of one big event.  An
    # array: the first occurrence belongs to the first event.
    if is_array:
        return scan_str(raw, key, i)
    return scan_str_head_tail(raw, key)


def _locate(raw: bytes) -> tuple[int, bool] | None:
    """Start of the (first) event and whether the frame is an array."""
    i, c = _body(raw)
    if c == 0x7B:
        return i, False
    if c == 0x5B:
        j = _first_event_start(raw, i)
        return None if j < 0 else (j, True)
    return None


def _is_text(raw: bytes, word: bytes) -> bool:
    return raw.strip() == word


def classify(raw: bytes) -> Classified:
    """What a received frame is.  Cheap: events are never parsed."""
    i, c = _body(raw)
    if c == 0x5B and raw[i:].rstrip() == b"[]":
        return Classified(Kind.INFO, detail="empty")
    loc = _locate(raw)
    if loc is not None:
        j, is_array = loc
        et = _scan(raw, _K_EVENT_TYPE, j, is_array)
        if et is not None:
            return Classified(Kind.DATA, et, _scan(raw, _K_MARKET, j, is_array))
        msg = loads_small(raw)
        if msg is None:
            return Classified(Kind.MALFORMED if len(raw) <= CONTROL_MAX else Kind.UNKNOWN)
        if isinstance(msg, dict) and ("error" in msg or "message" in msg):
            return Classified(Kind.ERROR, detail=str(msg.get("error") or msg.get("message")))
        return Classified(Kind.UNKNOWN)
    if _is_text(raw, PONG):
        return Classified(Kind.PONG)
    if _is_text(raw, PING):
        return Classified(Kind.HEARTBEAT, detail="PING")
    if c in (0x7B, 0x5B):
        return Classified(Kind.MALFORMED)
    text = raw.strip()
    if text in TEXT_NOTICES:
        return Classified(Kind.INFO, detail=text.decode("ascii"))
    if 0 < len(text) <= _TEXT_ERROR_MAX and all(0x20 <= b < 0x7F for b in text):
        return Classified(Kind.ERROR, detail=text.decode("ascii"))
    return Classified(Kind.MALFORMED)


def route(raw: bytes) -> RouteKey | None:
    """``(event_type, market condition id)``; ``None`` for PONG, ``[]``, garbage."""
    loc = _locate(raw)
    if loc is None:
        return None
    j, is_array = loc
    market = _scan(raw, _K_MARKET, j, is_array)
    if market is None:
        return None
    et = _scan(raw, _K_EVENT_TYPE, j, is_array)
    return None if et is None else RouteKey(et, market)


def split_events(raw: bytes) -> list[tuple[RouteKey | None, bytes]] | None:
    """Each event of an array frame with its own route key, or ``None`` when
    the frame is not an array of events for more than one route (then
    :func:`route` is the whole answer).  An element without a route (not an
    object, no ``event_type`` or ``market``) keeps its place with the key
    ``None``: the publisher sends it to the unrouted subject rather than
    dropping it.

    The events' bytes are re-serialised (compact JSON of the same values);
    the frame as received is what the disk keeps.  Cost: one orjson parse of
    the array (C speed); only array frames pay it, and those are the initial
    dumps and the rare batched updates.  Never raises on received bytes.
    """
    i, c = _body(raw)
    if c != 0x5B:
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, list) or len(doc) < 2:
        return None
    out: list[tuple[RouteKey | None, bytes]] = []
    for ev in doc:
        key = None
        if isinstance(ev, dict):
            et, market = ev.get("event_type"), ev.get("market")
            if isinstance(et, str) and isinstance(market, str) and et and market:
                key = RouteKey(et, market)
        out.append((key, orjson.dumps(ev)))
    if len({k for k, _ in out if k is not None}) < 2:
        return None
    return out


def sequence(raw: bytes) -> SeqInfo | None:
    """Polymarket has no sequence numbers: watch for silence instead."""
    return None


def exchange_ts_ns(raw: bytes) -> int | None:
    """The (first) event's ``timestamp`` (epoch ms as a string), in ns."""
    loc = _locate(raw)
    if loc is None:
        return None
    ts = _scan(raw, _K_TIMESTAMP, *loc)
    if ts is None or not (ts.isascii() and ts.isdigit()) or len(ts) > 19:
        return None
    return epoch_to_ns(int(ts))


class Polymarket(VenueDefaults):
    """Message builders (stateless: the market channel has no request ids)."""

    name = "polymarket"
    default_channels = ("market",)
    channels = frozenset({"market"})
    channels_configurable = False
    per_connection = DEFAULT_TOKENS_PER_CONNECTION
    needs_key = False
    checksum_validator = False
    url = URL
    demo_url = None
    #: Client sends text PING every ~10 s; PONG proves liveness of the socket
    #: only, not of the data: a silence watchdog is still needed.
    keepalive = Keepalive(client_ping_interval=10.0, app_ping=True, server_heartbeat=None)
    #: the venue's ceiling: a configured cap above it is refused
    max_per_connection = MAX_TOKENS_PER_CONNECTION

    subscriber = PolymarketSubscriber
    discover = staticmethod(discovery.discover)
    rest_url = discovery.REST

    classify = staticmethod(classify)
    route = staticmethod(route)
    sequence = staticmethod(sequence)
    exchange_ts_ns = staticmethod(exchange_ts_ns)
    split_events = staticmethod(split_events)

    def __init__(self, max_tokens: int = DEFAULT_TOKENS_PER_CONNECTION) -> None:
        """``max_tokens``: the per-connection cap (1..500).

        Raises:
            ConfigError: a cap outside 1..MAX_TOKENS_PER_CONNECTION.
        """
        if not 1 <= max_tokens <= MAX_TOKENS_PER_CONNECTION:
            raise ConfigError(None, "per_connection",
                              f"Polymarket tokens per connection {max_tokens} not in "
                              f"1..{MAX_TOKENS_PER_CONNECTION} (above it updates silently stop)")
        self.max_tokens = max_tokens

    def _ids(self, asset_ids: Iterable[str] | str) -> list[str]:
        ids = as_list(asset_ids)
        if not ids:
            raise ConfigError(None, "assets_ids", "no token ids")
        if len(ids) > self.max_tokens:
            raise ConfigError(None, "assets_ids",
                              f"{len(ids)} token ids exceed the cap of {self.max_tokens} "
                              f"per connection (the venue stops updates above "
                              f"{MAX_TOKENS_PER_CONNECTION})")
        return ids

    def initial(self, asset_ids: Iterable[str] | str, custom_feature_enabled: bool = True) -> bytes:
        """The first message after connect.

        Raises:
            ConfigError: no ids, or more than one connection can carry.
        """
        return dumps({"assets_ids": self._ids(asset_ids), "type": "market",
                      "custom_feature_enabled": custom_feature_enabled})

    def subscribe(self, asset_ids: Iterable[str] | str) -> bytes:
        """Add tokens to a live connection."""
        return dumps({"assets_ids": self._ids(asset_ids), "operation": "subscribe"})

    def unsubscribe(self, asset_ids: Iterable[str] | str) -> bytes:
        return dumps({"assets_ids": self._ids(asset_ids), "operation": "unsubscribe"})

    @staticmethod
    def ping() -> bytes:
        """The text frame ``PING`` (send as text, not as a WebSocket ping)."""
        return PING
