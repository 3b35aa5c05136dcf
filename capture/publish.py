"""``python -m capture.publish``: the publisher process, with the venue's routing.

The publisher (:mod:`flusher.publisher.publish`) sits below the venues and
never imports them; this entry, at the application layer, builds its subject
routing and exchange-timestamp reader from the venue registry
(:func:`capture.venues.subject_fn`, :func:`capture.venues.fanout_fn`) and
hands them down.  It takes the same
options as ``python -m flusher.publisher.process`` (the supervisor gives it
``--settings FILE``).
"""
from __future__ import annotations

import sys

from capture import venues
from flusher.publisher import process, publish
from flusher.publisher.routing import Routing


def venue_routing(prefix: str, venue: str, shard: int) -> Routing:
    """Data by the venue's route key, venue chatter to the shard's control
    subject, None (-> unrouted) for the rest; the venue's exchange timestamp
    for the lag metric; for a venue whose array frames span several routes,
    the per-event split (:func:`capture.venues.fanout_fn`).

    Raises:
        ConfigError: unknown venue.
    """
    v = venues.get(venue)
    # Only a venue that can split a frame gets a fan-out function: the others
    # publish exactly as before, with no per-frame check at all.
    fanout = venues.fanout_fn(prefix, venue) if getattr(v, "split_events", None) else None
    return Routing(venues.subject_fn(prefix, venue, shard), v.exchange_ts_ns, fanout)


def make_publisher(ring_path: str, *, venue: str, shard: int, bus, **kw) -> publish.Publisher:
    """A :class:`~flusher.publisher.publish.Publisher` routed by the venue
    registry (for callers in-process; the same wiring as :func:`main`)."""
    r = venue_routing(bus.prefix, venue, shard)
    return publish.Publisher(ring_path, venue=venue, shard=shard, bus=bus,
                             subject_fn=r.subject_fn, exchange_ts=r.exchange_ts,
                             fanout_fn=r.fanout_fn, **kw)


def main(argv: list[str] | None = None) -> int:
    return process.main(argv, venue_routing=venue_routing)


if __name__ == "__main__":
    sys.exit(main())
