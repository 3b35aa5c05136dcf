"""What a receiver is told: :class:`ReceiverConfig`, and the two ways a
receiver process gets one: a settings file (``--settings FILE``, what
``capture run`` does: the application layer resolves the capture config into
this dataclass, :func:`capture.children.resolve`, and writes it with
:mod:`common.settings`), or ``python -m capture.receiver`` options
(``parse_args``; ``ReceiverConfig.to_argv`` is its inverse).

The receiver never reads the capture config itself: that file belongs to the
application layer above it.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

from common import settings
from common.errors import ConfigError

from capture.receiver.lifecycle import Timing
from capture.receiver.transport import DEFAULT_MAX_MESSAGE, TRANSPORTS, default_transport
from capture.venues import VENUES, get as get_venue

@dataclass
class ReceiverConfig:
    """Everything a receiver needs.  The supervisor builds one per shard.

    Attributes:
        ring: path of the ring file (created by the supervisor, or here if
            ``ring_capacity`` is set and the file is missing).
        venue: a name in :data:`capture.venues.VENUES`.
        url: WebSocket URL (default: the venue's production URL).
        symbols: explicit instruments (symbols / token ids / tickers); split
            into connections of ``per_connection`` in the given order.
        connections: explicit grouping instead: one list per connection.
        discover: take instruments from discovery (ignored when
            ``symbols``/``connections`` are given).
        discovery_url: REST base URL for discovery (default: the venue's).
        rediscover_interval: seconds between re-discoveries (0: never).
        shard, shards: this shard's index among the venue's shards and their
            count (the plan's ``for_shard(shard)``, discovery only).
        shard_id: the deployment's id of this shard (config ``[[shard]] id``),
            for records; defaults to ``shard``.
        per_connection: instruments per connection (capacity for the plan).
        min_connections: open at least this many connections (discovery).
        transport: ``picows`` (default) or ``websockets``.
        cores: CPU cores to pin the process to (None: no pinning).
        mlock: lock memory (mlockall) where permitted; ``"require"`` fails
            if not permitted.
        channels, depth: what to subscribe per instrument (venue defaults).
        timing: lifecycle intervals (:class:`capture.receiver.lifecycle.Timing`).
        poll_interval: producer heartbeat / pending gap record period.
        stats_interval: ``receiver_stats`` record period (0: never).
        frag_timeout: how long writing one very large (fragmented) frame may
            wait for the drains to make room before it is dropped and
            recorded; the only place a ring write can wait, so kept short.
        status_file: write the connections' status here every poll (JSON,
            atomically; read by the supervisor's /metrics and health).
        max_instruments: discovery only: keep at most this many instruments
            (the first by key, so every host keeps the same ones); 0: all.
        seed: seed of the jitter randomness (None: from the OS).
        kalshi_key_id, kalshi_key_file: handshake credentials of a venue
            that ``needs_key`` (Kalshi; the names are the command line's).
        integrity: check sequence numbers, accept the checksum validator's
            reports, repair per symbol.
        repair_burst, repair_window: per-symbol repair limit: at most
            ``repair_burst`` repairs per ``repair_window`` seconds (token bucket).
        integrity_socket: the integrity channel's path (default
            :func:`capture.receiver.repair.channel_path` of ``ring``; Kraken spot only).
    """

    ring: str
    venue: str
    url: str | None = None
    symbols: list[str] | None = None
    connections: list[list[str]] | None = None
    discover: bool = False
    discovery_url: str | None = None
    rediscover_interval: float = 0.0
    shard: int = 0
    shards: int = 1
    shard_id: int | None = None
    per_connection: int | None = None
    min_connections: int = 1
    transport: str = field(default_factory=default_transport)
    cores: list[int] | None = None
    mlock: bool | str = False
    channels: list[str] | None = None
    depth: int = 10
    timing: Timing = field(default_factory=Timing)
    poll_interval: float = 1.0
    stats_interval: float = 60.0
    max_message: int = DEFAULT_MAX_MESSAGE
    ring_capacity: int | None = None
    frag_timeout: float = 0.1
    status_file: str | None = None
    max_instruments: int = 0
    seed: int | None = None
    kalshi_key_id: str | None = None
    kalshi_key_file: str | None = None
    integrity: bool = True
    repair_burst: int = 3
    repair_window: float = 60.0
    integrity_socket: str | None = None

    def validate(self) -> None:
        """Raises: ConfigError naming the key."""
        get_venue(self.venue)
        if self.transport not in TRANSPORTS:
            raise ConfigError(None, "transport", f"{self.transport!r} is not one of {TRANSPORTS}")
        if not (self.symbols or self.connections or self.discover):
            raise ConfigError(None, "symbols", "no instruments: give symbols, connections or discover")
        if not 0 <= self.shard < self.shards:
            raise ConfigError(None, "shard", f"shard {self.shard} not in 0..{self.shards - 1}")
        if self.per_connection is not None and self.per_connection < 1:
            raise ConfigError(None, "per_connection", "must be >= 1")
        ceiling = getattr(get_venue(self.venue), "max_per_connection", None)
        if ceiling and self.capacity > ceiling:
            raise ConfigError(None, "per_connection",
                              f"{self.capacity} exceeds {self.venue}'s {ceiling} per connection "
                              "(above it the venue silently stops updates)")
        if self.poll_interval <= 0:
            raise ConfigError(None, "poll_interval", "must be > 0")
        if get_venue(self.venue).needs_key and bool(self.kalshi_key_id) != bool(self.kalshi_key_file):
            raise ConfigError(None, "kalshi_key_file", "give both the key id and the key file")
        if self.repair_burst < 0:
            raise ConfigError(None, "repair_burst", "must be >= 0")
        if self.repair_window <= 0:
            raise ConfigError(None, "repair_window", "must be > 0")

    def to_argv(self) -> list[str]:
        """The ``python -m capture.receiver`` arguments that parse back to
        this config (for a supervisor that starts receivers as processes)."""
        a = ["--ring", self.ring, "--venue", self.venue, "--transport", self.transport]
        opt = {"--url": self.url, "--discovery-url": self.discovery_url,
               "--per-connection": self.per_connection, "--ring-capacity": self.ring_capacity,
               "--seed": self.seed, "--kalshi-key-id": self.kalshi_key_id,
               "--status-file": self.status_file,
               "--kalshi-key-file": self.kalshi_key_file,
               "--integrity-socket": self.integrity_socket}
        for k, v in opt.items():
            if v is not None:
                a += [k, str(v)]
        if self.symbols:
            a += ["--symbols", ",".join(self.symbols)]
        for g in self.connections or []:
            a += ["--connection", ",".join(g)]
        if self.discover:
            a.append("--discover")
        if not self.integrity:
            a.append("--no-integrity")
        if self.cores is not None:
            a += ["--cores", ",".join(map(str, self.cores))]
        if self.mlock:
            a += ["--mlock", "require" if self.mlock == "require" else "try"]
        if self.channels:
            a += ["--channels", ",".join(self.channels)]
        a += ["--rediscover-interval", repr(self.rediscover_interval), "--shard", str(self.shard),
              "--shards", str(self.shards), "--min-connections", str(self.min_connections),
              "--max-instruments", str(self.max_instruments),
              "--depth", str(self.depth), "--poll-interval", repr(self.poll_interval),
              "--stats-interval", repr(self.stats_interval), "--max-message", str(self.max_message),
              "--frag-timeout", repr(self.frag_timeout),
              "--repair-burst", str(self.repair_burst),
              "--repair-window", repr(self.repair_window)]
        for f in dataclasses.fields(Timing):
            v = getattr(self.timing, f.name)
            if v != f.default:
                a += ["--timing", f"{f.name}=" + ("none" if v is None else repr(v))]
        return a

    @property
    def capacity(self) -> int:
        """Instruments per connection: configured, or the venue's (its trait)."""
        return self.per_connection or get_venue(self.venue).per_connection



def _list(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _cores(s: str) -> list[int]:
    out: list[int] = []
    for part in _list(s):
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def parse_args(argv: Sequence[str] | None = None) -> ReceiverConfig:
    """argv -> :class:`ReceiverConfig` (raises SystemExit on bad usage,
    ConfigError for a bad settings file).  Defaults are the dataclass's."""
    d = ReceiverConfig
    p = argparse.ArgumentParser(prog="python -m capture.receiver",
                                description="Receive one shard's WebSocket connections into a ring.")
    p.add_argument("--settings", help="read every setting from this JSON file (what capture run "
                                      "does; see common.settings); no other option then")
    p.add_argument("--ring", help="ring file (see ring.create)")
    p.add_argument("--status-file", help="write the connections' status here every poll")
    p.add_argument("--venue", choices=sorted(VENUES), help="the venue")
    p.add_argument("--url", help="WebSocket URL (default: the venue's)")
    p.add_argument("--symbols", type=_list, help="comma-separated instruments")
    p.add_argument("--connection", action="append", type=_list, dest="connections",
                   help="instruments of one connection (repeat for each connection)")
    p.add_argument("--per-connection", type=int, help="instruments per connection")
    p.add_argument("--discover", action="store_true", help="instruments from discovery + sharding")
    p.add_argument("--discovery-url", help="REST base URL for discovery")
    p.add_argument("--rediscover-interval", type=float, default=d.rediscover_interval,
                   help="seconds (0: never)")
    p.add_argument("--shard", type=int, default=d.shard, help="index among --shards")
    p.add_argument("--shards", type=int, default=d.shards)
    p.add_argument("--min-connections", type=int, default=d.min_connections)
    p.add_argument("--max-instruments", type=int, default=d.max_instruments,
                   help="discovery: keep at most this many instruments (0: all)")
    p.add_argument("--transport", choices=TRANSPORTS, default=default_transport())
    p.add_argument("--cores", type=_cores, help="CPU cores to pin to, e.g. 1 or 0,1 or 2-3")
    p.add_argument("--mlock", nargs="?", const="try", choices=("try", "require"),
                   help="lock memory (mlockall); 'require' fails when not permitted")
    p.add_argument("--channels", type=_list, help="channels/feeds (venue default if absent)")
    p.add_argument("--depth", type=int, default=d.depth, help="Kraken book depth")
    p.add_argument("--timing", action="append", default=[], metavar="KEY=SECONDS",
                   help="lifecycle interval, e.g. silence_timeout=60 (repeatable); keys: "
                        + ", ".join(f.name for f in dataclasses.fields(Timing)))
    p.add_argument("--poll-interval", type=float, default=d.poll_interval)
    p.add_argument("--stats-interval", type=float, default=d.stats_interval)
    p.add_argument("--max-message", type=int, default=d.max_message)
    p.add_argument("--ring-capacity", type=int, help="create the ring with this capacity if missing")
    p.add_argument("--frag-timeout", type=float, default=d.frag_timeout,
                   help="seconds a fragmented (very large) frame may wait for ring room")
    p.add_argument("--seed", type=int, help="seed of the jitter randomness")
    p.add_argument("--kalshi-key-id")
    p.add_argument("--kalshi-key-file")
    p.add_argument("--no-integrity", dest="integrity", action="store_false",
                   help="no sequence checks, no checksum reports, no repairs")
    p.add_argument("--repair-burst", type=int, default=d.repair_burst,
                   help="per-symbol repairs allowed per --repair-window (token bucket)")
    p.add_argument("--repair-window", type=float, default=d.repair_window, help="seconds")
    p.add_argument("--integrity-socket",
                   help="the checksum validator's channel (default: <ring>.integrity.sock)")
    a = p.parse_args(argv)
    read = settings.from_command_line(ReceiverConfig, a, alone=("venue", "ring"), required=("venue", "ring"))
    if read is not None:
        return read
    tkw: dict[str, Any] = {}
    names = {f.name: f for f in dataclasses.fields(Timing)}
    for item in a.timing:
        k, _, v = item.partition("=")
        if k not in names:
            p.error(f"unknown timing key {k!r}")
        tkw[k] = int(v) if k == "peek_bytes" else (None if v.lower() == "none" else float(v))
    mlock: bool | str = False if a.mlock is None else ("require" if a.mlock == "require" else True)
    return ReceiverConfig(
        ring=a.ring, venue=a.venue, url=a.url, symbols=a.symbols, connections=a.connections,
        discover=a.discover, discovery_url=a.discovery_url,
        rediscover_interval=a.rediscover_interval, shard=a.shard, shards=a.shards,
        per_connection=a.per_connection, min_connections=a.min_connections,
        max_instruments=a.max_instruments, transport=a.transport, cores=a.cores, mlock=mlock, channels=a.channels, depth=a.depth,
        timing=Timing(**tkw), poll_interval=a.poll_interval, stats_interval=a.stats_interval,
        max_message=a.max_message, ring_capacity=a.ring_capacity, frag_timeout=a.frag_timeout,
        status_file=a.status_file, seed=a.seed,
        kalshi_key_id=a.kalshi_key_id, kalshi_key_file=a.kalshi_key_file,
        integrity=a.integrity, repair_burst=a.repair_burst, repair_window=a.repair_window,
        integrity_socket=a.integrity_socket)
