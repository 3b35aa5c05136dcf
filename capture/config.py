"""Configuration: one TOML file, validated strictly, resolved into typed objects.

Every mistake is a :class:`~common.errors.ConfigError` naming the file, the
dotted key and what is wrong; unknown keys are errors (a typo must not turn
into a silently ignored setting).  Sizes and durations follow the one grammar
of :mod:`common.units`; a setting a child takes defaults to that child's own
dataclass default.  :mod:`capture.children` resolves a loaded config into each
child's settings; ``capture config check FILE`` runs that resolution and
prints the resolved plan, as ``capture run`` starts it.  Without ``--config``, :func:`default_config` is used: public
Kraken spot and Polymarket feeds, an embedded nats-server, data in ./data.

The file (see ``capture.example.toml`` for every key, documented)::

    [ring]      dir, capacity, max_frame
    [storage]   data_dir, segment_bytes, fsync, fsync_interval, compress, drain_timeout
    [nats]      servers (empty = embedded), prefix, user, password, token, creds,
                tls = {ca, cert, key, hostname}, horizon, connect_timeout,
                embedded_port, ack_timeout, window
    [nats.streams.<venue>]  name, replicas, max_bytes, max_msgs, max_age,
                duplicate_window, discard, storage (see flusher/publisher/stream.py)
    [metrics]   bind, port_base (a shard listens on port_base + shard id)
    [venues.<venue>]        url, rest_url, key_id, key_file (Kalshi), ...
    [[shard]]   id, venue, cores, connections, transport, instruments | discovery,
                channels, book_depth, silence_timeout, rediscover_interval, lock_memory,
                max_instruments, checksum_skip
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable

from capture import venues as venue_registry
from capture.receiver.settings import ReceiverConfig
from capture.receiver.transport import TRANSPORTS
from common import units
from common.errors import ConfigError
from flusher.publisher.publish import PublisherSettings
from flusher.publisher.stream import parse_config as parse_bus  # the publisher's rules, not a copy
from flusher.segments.drain import MIN_SEGMENT_BYTES, POLICIES as FSYNC_POLICIES, FlusherConfig
from common.redact import redact_urls

# One home per default: a setting a child takes defaults to that child's own
# dataclass default (FlusherConfig, PublisherSettings, ReceiverConfig); only
# what exists at this layer alone (the ring's size, metrics, shard layout)
# has its default here.


@dataclass(frozen=True)
class RingConfig:
    dir: str = "/dev/shm/capture"
    capacity: int = 4 << 20
    max_frame: int = 16 << 20


@dataclass(frozen=True)
class StorageConfig:
    data_dir: str = "./data"
    segment_bytes: int = FlusherConfig.segment_bytes
    fsync: str = FlusherConfig.fsync
    fsync_interval: float = FlusherConfig.fsync_interval
    # Off unless asked for (the example config asks): compressing closed
    # segments costs CPU on the host whose receiver is pinned.
    compress: bool = FlusherConfig.compress
    drain_timeout: float = FlusherConfig.drain_timeout


@dataclass(frozen=True)
class NatsConfig:
    """The ``[nats]`` table.

    Everything the publisher reads (servers, credentials, TLS, prefix,
    horizon, streams) is validated by the publisher's own parser,
    :func:`flusher.publisher.stream.parse_config`, so there is one set of rules; only
    the supervisor's own keys (embedded_port, ack_timeout, window) are taken
    out first.  ``table`` is what the publisher is given.
    """
    table: dict[str, Any] = field(default_factory=dict)
    bus: Any = None                      # flusher.publisher.stream.BusConfig
    embedded_port: int = 0
    ack_timeout: float = PublisherSettings.ack_timeout
    window: int = PublisherSettings.window

    @property
    def servers(self) -> tuple[str, ...]:
        return tuple(self.bus.servers) if self.bus else ()

    @property
    def prefix(self) -> str:
        return self.bus.prefix if self.bus else "prod"

    @property
    def embedded(self) -> bool:
        return not self.servers

    def stream_name(self, venue: str) -> str:
        return self.bus.stream_for(venue).name

    def __repr__(self) -> str:  # never print secrets
        return (f"NatsConfig(servers={redact_urls(self.servers)!r}, prefix={self.prefix!r}, "
                f"user={self.table.get('user')!r}, password={'***' if self.table.get('password') else None}, "
                f"token={'***' if self.table.get('token') else None})")


@dataclass(frozen=True)
class MetricsConfig:
    bind: str = "127.0.0.1"
    port_base: int = 9400


@dataclass(frozen=True)
class VenueConfig:
    url: str | None = None
    rest_url: str | None = None
    key_id: str | None = None
    key_file: str | None = None
    demo: bool = False


@dataclass(frozen=True)
class ShardConfig:
    id: int
    venue: str
    cores: tuple[int, ...] = ()
    connections: int = 0              # 0 = sized from the venue's per-connection capacity
    transport: str = "picows"
    instruments: tuple[str, ...] = ()
    discovery: bool = False
    channels: tuple[str, ...] = ()
    book_depth: int = ReceiverConfig.depth
    silence_timeout: float = 60.0
    rediscover_interval: float = 3600.0
    lock_memory: bool = False
    max_instruments: int = ReceiverConfig.max_instruments   # 0 = no cap (discovery only)
    #: pairs whose book checksums the validator does not check (the per-pair
    #: opt-out for pairs known to mismatch falsely); venues with checksums only
    checksum_skip: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    path: str | None
    ring: RingConfig
    storage: StorageConfig
    nats: NatsConfig
    metrics: MetricsConfig
    venues: dict[str, VenueConfig]
    shards: tuple[ShardConfig, ...]

    def shard(self, shard_id: int) -> ShardConfig:
        for s in self.shards:
            if s.id == shard_id:
                return s
        known = ", ".join(str(s.id) for s in self.shards) or "none"
        raise ConfigError(self.path, "shard", f"no shard {shard_id} in the config (shards: {known})")

    def venue_shards(self, venue: str) -> list[int]:
        """Ids of the shards of one venue, sorted: the planner's shard order."""
        return sorted(s.id for s in self.shards if s.venue == venue)

    def venue(self, name: str) -> VenueConfig:
        return self.venues.get(name, VenueConfig())

    def ring_path(self, shard_id: int) -> str:
        return os.path.join(self.ring.dir, f"shard-{shard_id}.ring")


# -- parsing helpers ----------------------------------------------------------

class _Section:
    """Typed, key-checked access to one table of the file."""

    def __init__(self, path: str | None, prefix: str, table: Any) -> None:
        if not isinstance(table, dict):
            raise ConfigError(path, prefix, f"must be a table, not {type(table).__name__}")
        self.path, self.prefix, self.table = path, prefix, dict(table)
        self.used: set[str] = set()

    def key(self, k: str) -> str:
        return f"{self.prefix}.{k}" if self.prefix else k

    def get(self, k: str, conv: Callable[[str, Any], Any], default: Any) -> Any:
        self.used.add(k)
        if k not in self.table:
            return default
        try:
            return conv(self.key(k), self.table[k])
        except ConfigError as e:
            if e.path is None and self.path is not None:
                raise ConfigError(self.path, e.key, e.reason) from None
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(self.path, self.key(k), str(e)) from None

    def sub(self, k: str) -> "_Section":
        self.used.add(k)
        return _Section(self.path, self.key(k), self.table.get(k, {}))

    def done(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise ConfigError(self.path, self.key(unknown[0]),
                              f"unknown key (known here: {', '.join(sorted(self.used))})")


def _str(key: str, v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"must be a string, not {type(v).__name__}")
    return v


def _opt_str(key: str, v: Any) -> str | None:
    return _str(key, v)


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"must be true or false, not {v!r}")
    return v


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[str, Any], int]:
    def conv(key: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"must be an integer, not {v!r}")
        if lo is not None and v < lo or hi is not None and v > hi:
            raise ValueError(f"{v} is out of range [{lo}, {hi}]")
        return v
    return conv


def _size(key: str, v: Any) -> int:
    return units.parse_size(v, key)


def _duration(key: str, v: Any) -> float:
    return units.parse_duration(v, key)


def _choice(options: tuple[str, ...]) -> Callable[[str, Any], str]:
    def conv(key: str, v: Any) -> str:
        if v not in options:
            raise ValueError(f"{v!r} is not one of {', '.join(options)}")
        return v
    return conv


def _str_list(key: str, v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise TypeError("must be a list of non-empty strings")
    return tuple(v)


def _int_list(key: str, v: Any) -> tuple[int, ...]:
    if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v):
        raise TypeError("must be a list of non-negative integers")
    return tuple(v)


# -- loading --------------------------------------------------------------------

def load(path: str) -> Config:
    """Read and validate a config file.

    Raises:
        ConfigError: naming the file and the key.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(path, None, "no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, None, f"not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(path, None, f"cannot read: {e.strerror}") from None
    return from_dict(data, path)


def loads(text: str, path: str | None = None) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, None, f"not valid TOML: {e}") from None
    return from_dict(data, path)


def from_dict(data: dict[str, Any], path: str | None = None) -> Config:
    top = _Section(path, "", data)

    r = top.sub("ring")
    ring_cfg = RingConfig(
        dir=r.get("dir", _str, RingConfig.dir),
        capacity=r.get("capacity", _size, RingConfig.capacity),
        max_frame=r.get("max_frame", _size, RingConfig.max_frame),
    )
    r.done()
    cap = ring_cfg.capacity
    if cap & (cap - 1) or not (64 << 10) <= cap <= (1 << 31):
        raise ConfigError(path, "ring.capacity", f"{cap} must be a power of two between 64KiB and 2GiB")
    if ring_cfg.max_frame < cap // 8:
        raise ConfigError(path, "ring.max_frame", f"must be at least capacity/8 ({cap // 8})")

    s = top.sub("storage")
    storage = StorageConfig(
        data_dir=s.get("data_dir", _str, StorageConfig.data_dir),
        segment_bytes=s.get("segment_bytes", _size, StorageConfig.segment_bytes),
        fsync=s.get("fsync", _choice(FSYNC_POLICIES), StorageConfig.fsync),
        fsync_interval=s.get("fsync_interval", _duration, StorageConfig.fsync_interval),
        compress=s.get("compress", _bool, StorageConfig.compress),
        drain_timeout=s.get("drain_timeout", _duration, StorageConfig.drain_timeout),
    )
    s.done()
    if storage.segment_bytes < MIN_SEGMENT_BYTES:  # the flusher's own limit (one home)
        raise ConfigError(path, "storage.segment_bytes", f"must be at least {MIN_SEGMENT_BYTES}")

    top.used.add("nats")
    raw = data.get("nats", {})
    if not isinstance(raw, dict):
        raise ConfigError(path, "nats", "must be a table")
    table = dict(raw)
    own = _Section(path, "nats", {k: table.pop(k) for k in ("embedded_port", "ack_timeout", "window")
                                  if k in table})
    for venue in (table.get("streams") or {}):
        if venue not in venue_registry.VENUES:
            raise ConfigError(path, f"nats.streams.{venue}", f"unknown venue (known: {_known_venues()})")
    nats = NatsConfig(
        table=table,
        bus=parse_bus(table, path),
        embedded_port=own.get("embedded_port", _int(0, 65535), NatsConfig.embedded_port),
        ack_timeout=own.get("ack_timeout", _duration, NatsConfig.ack_timeout),
        window=own.get("window", _int(1, 1 << 20), NatsConfig.window),
    )
    own.done()

    m = top.sub("metrics")
    metrics = MetricsConfig(
        bind=m.get("bind", _str, MetricsConfig.bind),
        port_base=m.get("port_base", _int(0, 65535), MetricsConfig.port_base),
    )
    m.done()

    vt = top.sub("venues")
    venues: dict[str, VenueConfig] = {}
    for venue in list(vt.table):
        if venue not in venue_registry.VENUES:
            raise ConfigError(path, f"venues.{venue}", f"unknown venue (known: {_known_venues()})")
        vs = vt.sub(venue)
        venues[venue] = VenueConfig(
            url=vs.get("url", _opt_str, None),
            rest_url=vs.get("rest_url", _opt_str, None),
            key_id=vs.get("key_id", _opt_str, None),
            key_file=vs.get("key_file", _opt_str, None),
            demo=vs.get("demo", _bool, False),
        )
        vs.done()
    vt.done()

    top.used.add("shard")
    raw_shards = data.get("shard", [])
    if not isinstance(raw_shards, list):
        raise ConfigError(path, "shard", "must be an array of tables: [[shard]]")
    shards = []
    seen: set[int] = set()
    for i, tab in enumerate(raw_shards):
        sh = _Section(path, f"shard[{i}]", tab)
        sid = sh.get("id", _int(0, 65535), None)
        if sid is None:
            raise ConfigError(path, f"shard[{i}].id", "missing")
        if sid in seen:
            raise ConfigError(path, f"shard[{i}].id", f"shard {sid} is defined twice")
        seen.add(sid)
        venue = sh.get("venue", _choice(tuple(venue_registry.VENUES)), None)
        if venue is None:
            raise ConfigError(path, f"shard[{i}].venue", "missing")
        vcls = venue_registry.get(venue)
        cfg = ShardConfig(
            id=sid,
            venue=venue,
            cores=sh.get("cores", _int_list, ()),
            connections=sh.get("connections", _int(0, 4096), ShardConfig.connections),
            transport=sh.get("transport", _choice(TRANSPORTS), ShardConfig.transport),
            instruments=sh.get("instruments", _str_list, ()),
            discovery=sh.get("discovery", _bool, ShardConfig.discovery),
            channels=sh.get("channels", _channels(vcls), vcls.default_channels),
            book_depth=sh.get("book_depth", _choice_int((10, 25, 100, 500, 1000)), ShardConfig.book_depth),
            silence_timeout=sh.get("silence_timeout", _duration, ShardConfig.silence_timeout),
            rediscover_interval=sh.get("rediscover_interval", _duration, ShardConfig.rediscover_interval),
            lock_memory=sh.get("lock_memory", _bool, ShardConfig.lock_memory),
            max_instruments=sh.get("max_instruments", _int(0, 1 << 20), ShardConfig.max_instruments),
            checksum_skip=sh.get("checksum_skip", _str_list, ()),
        )
        sh.done()
        if cfg.checksum_skip and not vcls.checksum_validator:
            raise ConfigError(path, f"shard[{i}].checksum_skip",
                              f"{venue} books carry no checksum: there is nothing to skip")
        if not cfg.instruments and not cfg.discovery:
            raise ConfigError(path, f"shard[{i}].instruments",
                              "give an instrument list or set discovery = true")
        if cfg.instruments and cfg.discovery:
            raise ConfigError(path, f"shard[{i}].discovery",
                              "instruments and discovery = true exclude each other")
        if vcls.needs_key:
            vc = venues.get(venue, VenueConfig())
            if not vc.key_id or not vc.key_file:
                raise ConfigError(path, f"venues.{venue}.key_file",
                                  f"a {venue} shard needs venues.{venue}.key_id and key_file")
        shards.append(cfg)
    top.done()
    if not shards:
        raise ConfigError(path, "shard", "no [[shard]] defined")
    return Config(path, ring_cfg, storage, nats, metrics, venues, tuple(shards))


def _known_venues() -> str:
    return ", ".join(venue_registry.VENUES)


def _channels(vcls: Any) -> Callable[[str, Any], tuple[str, ...]]:
    """A shard's channel list: names the venue has (its ``channels`` trait)."""
    def conv(key: str, v: Any) -> tuple[str, ...]:
        chans = _str_list(key, v)
        unknown = [c for c in chans if c not in vcls.channels]
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not a {vcls.name} channel "
                             f"(known: {', '.join(sorted(vcls.channels))})")
        return chans
    return conv


def _choice_int(options: tuple[int, ...]) -> Callable[[str, Any], int]:
    def conv(key: str, v: Any) -> int:
        if isinstance(v, bool) or v not in options:
            raise ValueError(f"{v!r} is not one of {', '.join(map(str, options))}")
        return int(v)
    return conv


DEFAULT_TOML = """\
# Built-in default: public Kraken spot and Polymarket feeds, embedded NATS, ./data.
[storage]
data_dir = "./data"

[[shard]]
id = 0
venue = "kraken"
instruments = ["BTC/USD", "ETH/USD", "SOL/USD"]
channels = ["book", "trade", "ticker"]

[[shard]]
id = 1
venue = "polymarket"
discovery = true
max_instruments = 500
"""


def default_config() -> Config:
    return loads(DEFAULT_TOML, "<built-in default>")
