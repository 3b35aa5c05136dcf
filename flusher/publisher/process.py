"""``python -m flusher.publisher.process``: the publisher process (options, settings, signals).

The supervisor starts it as ``python -m capture.publish --settings FILE``
(:mod:`capture.publish` hands down the venue's routing); run directly, only
``--route test`` works, as flusher/ does not know the venues.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from common import settings
from common.errors import ConfigError, RingError
from common.lifeline import die_with_parent
from common.log import event as log_event, setup as setup_logging
from flusher.publisher.publish import Publisher, PublisherSettings
from flusher.publisher.routing import RoutingFactory, test_routing
from flusher.publisher.stream import NatsAuthError, NatsTLSError, StreamMismatch, parse_config

log = logging.getLogger("capture.publisher")


def build_parser() -> argparse.ArgumentParser:
    d = PublisherSettings
    ap = argparse.ArgumentParser(prog="python -m flusher.publisher.process",
                                 description="Publish one shard's ring to NATS JetStream.")
    ap.add_argument("--settings", help="read every setting from this JSON file "
                                       "(what the supervisor does; see common.settings)")
    ap.add_argument("--ring")
    ap.add_argument("--venue")
    ap.add_argument("--shard", type=int)
    ap.add_argument("--segments", default=d.segments, help="root directory of the segment files")
    ap.add_argument("--nats", default="{}", help="the nats config table as JSON (or @file)")
    ap.add_argument("--route", default=d.route, choices=("venue", "test"),
                    help="subject function: the venue's extractor (needs the venue registry: "
                         "python -m capture.publish), or test (payload prefix)")
    ap.add_argument("--ack-timeout", type=float, default=d.ack_timeout)
    ap.add_argument("--window", type=int, default=d.window)
    ap.add_argument("--drain-timeout", type=float, default=d.drain_timeout)
    ap.add_argument("--log-level", default=d.log_level)
    ap.add_argument("--status-file", default=d.status_file,
                    help="write counters here every second (JSON)")
    return ap


def settings_from_args(a: argparse.Namespace) -> PublisherSettings:
    """Raises: ConfigError (a bad settings file or ``--nats`` table, a missing option)."""
    read = settings.from_command_line(PublisherSettings, a, alone=("ring", "venue"),
                                      required=("ring", "venue", "shard"))
    if read is not None:
        return read
    raw = a.nats
    if raw.startswith("@"):
        try:
            with open(raw[1:]) as f:
                raw = f.read()
        except OSError as e:
            raise ConfigError(raw[1:], None, f"cannot read: {e.strerror}") from None
    try:
        table = json.loads(raw)
    except ValueError as e:
        raise ConfigError(None, "nats", f"not valid JSON: {e}") from None
    return PublisherSettings(ring=a.ring, venue=a.venue, shard=a.shard, segments=a.segments,
                             nats=table, route=a.route, window=a.window, ack_timeout=a.ack_timeout,
                             drain_timeout=a.drain_timeout, status_file=a.status_file,
                             log_level=a.log_level)


def main(argv: list[str] | None = None, *, venue_routing: RoutingFactory | None = None) -> int:
    """The publisher process.  ``venue_routing`` is the caller's (the venue
    registry lives above flusher/): without it only ``--route test`` runs."""
    a = build_parser().parse_args(argv)
    setup_logging("publisher", a.shard, a.log_level)
    try:
        s = settings_from_args(a)
        setup_logging("publisher", s.shard, s.log_level)
        die_with_parent()
        bus = parse_config(s.nats)
        if s.route == "test":
            routing = test_routing(bus.prefix, s.venue, s.shard)
        elif venue_routing is None:
            raise ConfigError(None, "route", "venue routing comes from the venue registry: "
                                             "run python -m capture.publish (or --route test)")
        else:
            routing = venue_routing(bus.prefix, s.venue, s.shard)
        pub = Publisher(s.ring, venue=s.venue, shard=s.shard, bus=bus, segments=s.segments,
                        subject_fn=routing.subject_fn, exchange_ts=routing.exchange_ts,
                        fanout_fn=routing.fanout_fn,
                        ack_timeout=s.ack_timeout, window=s.window,
                        drain_timeout=s.drain_timeout, status_file=s.status_file)
    except ConfigError as exc:
        log_event(log, "startup_failed", logging.ERROR, error=str(exc))
        return 2

    async def runner() -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, pub.stop)
        loop.add_signal_handler(signal.SIGINT, pub.stop)
        return await pub.run()
    try:
        return asyncio.run(runner())
    except (NatsAuthError, NatsTLSError, StreamMismatch, ConfigError) as exc:
        log_event(log, "fatal", logging.ERROR, error=str(exc))
        return 2
    except RingError as exc:  # a bad or missing ring file: nothing was published
        log_event(log, "startup_failed", logging.ERROR, error=f"cannot start: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
