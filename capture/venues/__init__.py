"""The venues, one folder each, and their registry.

A venue is one folder ``capture/venues/<venue>/``: ``protocol.py`` (the pure
functions ``classify``, ``route``, ``sequence``, ``exchange_ts_ns`` and a
class with the message builders, keepalive facts and the venue's traits:
see :class:`capture.venues.base.Venue`), ``subscriber.py`` (subscription
planning, replies and repairs) and ``discovery.py`` (REST discovery).
:data:`VENUES` maps the configured venue name to that class; it is the one
place that names the venues.  Everything above asks a venue's traits, never
its name.  The receiver and the publisher both use these, so a frame is
interpreted the same way everywhere.

Adding a venue: a new folder, and its class in :data:`VENUES` (or, for a
venue defined outside this package such as a test's, one :func:`register`
call).

Exceptions raised here (one tree, rooted in :mod:`common.errors`)::

    CaptureError
    ├── ConfigError                  bad builder arguments (unknown channel, depth, ...)
    └── VenueError
        ├── BookFormatError          checksum.py: a book frame unusable for checksumming
        ├── KeyFileError             kalshi/protocol.py: private key file refused (path, reason)
        └── DiscoveryError           capture.venues.discovery: a page kept failing (url, attempts)
"""
from __future__ import annotations

from typing import Any, Callable

from common.errors import ConfigError

from flusher.publisher import subjects
from capture.venues.base import (CONTROL_KINDS, Classified, Gap, GapDetector, Keepalive, Kind, RouteKey, SeqInfo, Venue,
                                 VenueDefaults, lstrip_ws)
from capture.venues.kalshi.protocol import Kalshi
from capture.venues.kraken.protocol import KrakenSpot
from capture.venues.kraken_futures.protocol import KrakenFutures
from capture.venues.polymarket.protocol import Polymarket

VENUES: dict[str, type] = {
    KrakenSpot.name: KrakenSpot,
    KrakenFutures.name: KrakenFutures,
    Polymarket.name: Polymarket,
    Kalshi.name: Kalshi,
}


def register(venue_cls: type) -> type:
    """Add a venue class under its ``name`` (returns it, so it can decorate).

    Raises:
        ConfigError: the name is taken by another class, or the class lacks
            a trait of :class:`capture.venues.base.Venue`.
    """
    name = getattr(venue_cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(None, "venue", f"{venue_cls!r} has no name")
    missing = [t for t in _TRAITS if not hasattr(venue_cls, t)]
    if missing:
        raise ConfigError(None, f"venue {name}", f"missing traits: {', '.join(missing)}")
    if VENUES.get(name, venue_cls) is not venue_cls:
        raise ConfigError(None, "venue", f"venue {name!r} is already registered")
    VENUES[name] = venue_cls
    return venue_cls


def checksum_venues() -> frozenset[str]:
    """The venues whose books the checksum validator process checks."""
    return frozenset(n for n, v in VENUES.items() if v.checksum_validator)


def get(name: str) -> type:
    """The venue class for a configured name.

    Raises:
        ConfigError: unknown venue.
    """
    try:
        return VENUES[name]
    except KeyError:
        raise ConfigError(None, "venue",
                          f"unknown venue {name!r}; known: {', '.join(sorted(VENUES))}") from None


def subject_fn(prefix: str, venue: str, shard: int | None = None) -> Callable[[bytes], str | None]:
    """A function raw frame -> NATS subject, or None for what cannot be routed.

    Data -> ``{prefix}.{venue}.{channel}.{instrument}`` (cached per route
    key); venue chatter (acks, heartbeats, pongs, errors, status) ->
    ``{prefix}.{venue}.control.shard-{N}`` when ``shard`` is given.  Only
    frames without a route are classified, so data stays cheap.  The
    publisher uses this; :func:`subject` is the one-off form.
    """
    v = get(venue)
    route, classify = v.route, v.classify
    control = subjects.control_subject(prefix, venue, shard) if shard is not None else None
    cache: dict[Any, str] = {}

    def fn(raw: bytes) -> str | None:
        rk = route(raw)
        if rk is None:
            return control if control and classify(raw).kind in CONTROL_KINDS else None
        s = cache.get(rk)
        if s is None:
            if len(cache) > 1 << 16:
                cache.clear()
            s = cache[rk] = subjects.data_subject(prefix, venue, rk.channel, rk.symbol)
        return s
    return fn


def fanout_fn(prefix: str, venue: str) -> Callable[[bytes], list[tuple[str, bytes]] | None]:
    """A function raw frame -> ``[(subject, event bytes), ...]`` for a frame
    that holds events of several routes (Polymarket's initial dump: books of
    many markets in one array), or None for any other frame, whose one
    subject :func:`subject_fn` gives.

    The frame on disk stays as received; this says where each of its events
    belongs so that every market's subscribers get their own.  Only frames
    that open with ``[`` are examined.  An element without a route goes to
    ``{prefix}.{venue}.unrouted`` (never dropped).
    """
    split = getattr(get(venue), "split_events", None)
    if split is None:
        return lambda raw: None
    unrouted = subjects.unrouted_subject(prefix, venue)

    def fn(raw: bytes) -> list[tuple[str, bytes]] | None:
        i = lstrip_ws(raw)
        if raw[i:i + 1] != b"[":
            return None
        parts = split(raw)
        if parts is None:
            return None
        return [(subjects.data_subject(prefix, venue, k.channel, k.symbol) if k is not None
                 else unrouted, b) for k, b in parts]
    return fn


def subject(prefix: str, venue: str, raw: bytes, shard: int | None = None) -> str:
    """The NATS subject of one received frame (``{prefix}.{venue}.unrouted``
    for what :func:`subject_fn` cannot route)."""
    return subject_fn(prefix, venue, shard)(raw) or subjects.unrouted_subject(prefix, venue)


#: What :func:`register` checks a venue class for (the optional ones come
#: from :class:`capture.venues.base.VenueDefaults`).
_TRAITS = ("url", "keepalive", "channels", "default_channels", "per_connection", "subscriber",
           "classify", "route", "sequence", "exchange_ts_ns", *(
               t for t in vars(VenueDefaults) if not t.startswith("_")))

__all__ = ["VENUES", "checksum_venues", "get", "register", "subject", "subject_fn", "fanout_fn", "Classified", "Gap", "GapDetector", "Keepalive", "Kind",
           "RouteKey", "SeqInfo", "Venue", "CONTROL_KINDS", "KrakenSpot", "KrakenFutures",
           "Polymarket", "Kalshi"]
