"""What each child process of a shard is told, resolved once from the config.

The capture config (:mod:`capture.config`) is read and validated by the
application layer only.  :func:`resolve` turns it, for one shard, into one
typed settings object per child - the dataclass the child itself defines:

    receiver    capture.receiver.settings.ReceiverConfig
    flusher     flusher.segments.drain.FlusherConfig
    publisher   flusher.publisher.publish.PublisherSettings
    integrity   capture.receiver.integrity.IntegritySettings  (venues with book checksums)

The supervisor writes each to an owner-only file (:mod:`common.settings`)
and starts the child as ``python -m <MODULES[role]> --settings FILE``; the
child reads it back into the same dataclass.  ``capture config check`` runs
the same resolution, so what it prints is what ``capture run`` starts.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from capture import venues
from capture.config import Config
from capture.receiver.lifecycle import Timing
from capture.receiver.integrity import IntegritySettings
from capture.receiver.settings import ReceiverConfig
from common import settings
from common.status import status_path
from flusher.segments.drain import FlusherConfig
from flusher.publisher.publish import PublisherSettings

#: The module each role runs as (``python -m MODULE --settings FILE``).  The
#: publisher starts from the application layer, which hands it the venue's
#: routing (flusher/ does not know the venues).
MODULES = {
    "flusher": "flusher.segments.drain",
    "publisher": "capture.publish",
    "integrity": "capture.receiver.integrity",
    "receiver": "capture.receiver",
}


@dataclass(frozen=True)
class ShardChildren:
    """One shard's children and their settings."""

    receiver: ReceiverConfig
    flusher: FlusherConfig
    publisher: PublisherSettings
    integrity: IntegritySettings | None

    def readers(self) -> tuple[str, ...]:
        """The ring readers, which must hold their slots before the receiver starts."""
        return ("flusher", "publisher") + (("integrity",) if self.integrity else ())

    def roles(self) -> dict[str, Any]:
        """role -> settings, readers first, the receiver last."""
        out = {r: getattr(self, r) for r in self.readers()}
        out["receiver"] = self.receiver
        return out


def receiver_settings(conf: Config, shard_id: int, *, status_file: str | None = None) -> ReceiverConfig:
    """The receiver's settings for shard ``shard_id``.

    The plan's shard index is this shard's position among the venue's shards
    (``Config.venue_shards``), so every host derives the same slice.

    Raises:
        ConfigError: no such shard.
    """
    sh = conf.shard(shard_id)
    vc = conf.venue(sh.venue)
    venue_cls = venues.get(sh.venue)
    order = conf.venue_shards(sh.venue)
    url = vc.url or (venue_cls.demo_url if vc.demo and venue_cls.demo_url else None)
    explicit = list(sh.instruments)
    per = None
    if explicit and sh.connections:
        per = -(-len(explicit) // sh.connections)   # ceil: spread over that many connections
    return ReceiverConfig(
        ring=conf.ring_path(shard_id), venue=sh.venue, url=url,
        symbols=explicit or None, discover=bool(sh.discovery), discovery_url=vc.rest_url,
        rediscover_interval=sh.rediscover_interval if sh.discovery else 0.0,
        shard=order.index(shard_id), shards=len(order), shard_id=shard_id,
        per_connection=per,
        min_connections=max(1, sh.connections * len(order)) if sh.discovery else 1,
        transport=sh.transport, cores=list(sh.cores) or None, mlock=bool(sh.lock_memory),
        channels=list(sh.channels) if venue_cls.channels_configurable else None,
        depth=sh.book_depth, timing=Timing(silence_timeout=sh.silence_timeout or None),
        max_instruments=sh.max_instruments, status_file=status_file,
        kalshi_key_id=vc.key_id if venue_cls.needs_key else None,
        kalshi_key_file=vc.key_file if venue_cls.needs_key else None)


def resolve(conf: Config, shard_id: int, *, nats_url: str | None = None,
            host: str | None = None) -> ShardChildren:
    """Every child's settings for shard ``shard_id``.

    Args:
        nats_url: the embedded nats-server's URL when the config names no
            servers (None: not started yet, as in ``config check``).
        host: the host name written into segment files (default: this host's).

    Raises:
        ConfigError: no such shard, or a setting a child refuses (naming the
            config file and the key).
    """
    sh = conf.shard(shard_id)
    st, n = conf.storage, conf.nats

    def status(role: str) -> str:
        return status_path(conf.ring.dir, shard_id, role)

    ring_path = conf.ring_path(shard_id)
    flusher = FlusherConfig(
        ring=ring_path, data_dir=st.data_dir, venue=sh.venue, shard=sh.id,
        host=host or socket.gethostname(), fsync=st.fsync, fsync_interval=st.fsync_interval,
        segment_bytes=st.segment_bytes, drain_timeout=st.drain_timeout, compress=st.compress,
        status_path=status("flusher"))
    table = dict(n.table)
    if n.embedded and nats_url:
        table["servers"] = [nats_url]
    publisher = PublisherSettings(
        ring=ring_path, venue=sh.venue, shard=sh.id, segments=st.data_dir, nats=table,
        ack_timeout=n.ack_timeout, window=n.window, drain_timeout=st.drain_timeout,
        status_file=status("publisher"))
    integrity = None
    if venues.get(sh.venue).checksum_validator:
        integrity = IntegritySettings(ring=ring_path, venue=sh.venue, depth=sh.book_depth,
                                      status_file=status("integrity"), skip=list(sh.checksum_skip))
    return ShardChildren(receiver=receiver_settings(conf, shard_id, status_file=status("receiver")),
                         flusher=flusher, publisher=publisher, integrity=integrity)


def write_settings(directory: str, role: str, obj: Any) -> list[str]:
    """Write ``obj`` for ``role`` into ``directory`` (owner-only, a new file)
    and return the child's command line (after the interpreter), which
    names only the file: credentials never reach a command line."""
    path = os.path.join(directory, f"{role}.settings.json")
    settings.write(path, obj)
    return ["-m", MODULES[role], "--settings", path]
