"""The receiver: one process per shard, one asyncio loop holding the shard's
N WebSocket connections, writing every message it receives into the ring.

How the supervisor starts one (as a child process), from the deployment's
config file (``[[shard]]`` N: venue, cores, instruments or discovery, ...)::

    python -m capture.receiver --config capture.toml --shard 3 --status-file PATH

or with everything explicit (no config file)::

    python -m capture.receiver --ring /dev/shm/capture/shard-3.ring --venue kraken \\
        --symbols BTC/USD,ETH/USD --cores 1 --transport picows

or, in Python, ``run_receiver(ReceiverConfig(...))`` (what ``main`` does after
parsing argv; ``from_capture_config(config, shard_id)`` builds one from a
:class:`capture.config.Config`, ``ReceiverConfig.to_argv()`` goes back).

SIGTERM/SIGINT: connections are closed with a close handshake, a
``shard_stop`` record is written, the producer is closed and the process
exits 0.  A configuration problem found at start (unknown core,
missing ring, bad venue) exits 2 with one line on stderr.

Rules kept here (the hot path itself is :meth:`capture.connection.Connection._on_message`):

* every frame is stamped on receipt (in the transport callback) before any
  parsing, and written as a DATA frame with that stamp and the connection id;
* data messages are never parsed; only small frames are classified;
* the ring never blocks the socket: a refused frame is counted by the
  producer, which writes a gap record once room returns (``poll`` runs
  every ``poll_interval``);
* one connection's failure never touches the others (each reconnects alone);
* every gap is visible: connection transitions, drops, discovery changes are
  control records in the ring itself;
* integrity (``integrity=True``, the default): sequence gaps (Kalshi,
  Kraken Futures) are found on the hot path; Kraken spot checksum mismatches
  arrive from the validator process (:mod:`capture.integrity`) over the
  integrity channel (:func:`capture.repair.channel_path`, a 0600 Unix
  datagram socket next to the ring, bound here).  Each is recorded and
  counted (status ``gaps``) and repaired for that symbol only, at most
  ``repair_burst`` times per ``repair_window`` seconds per symbol (see
  :mod:`capture.repair`).

Instruments come from an explicit list (no discovery call at all) or from
discovery: ``sharding.plan(venue, units, shards=..).for_shard(shard)``, then
re-discovered every ``rediscover_interval`` seconds (missed ticks are
skipped); new instruments are subscribed on the live connection where the
venue allows, and a ``rediscovery`` record lists what changed.

Errors (rooted in :class:`ring.errors.CaptureError`)::

    CaptureError
    ├── ConfigError                  bad configuration (from ring.errors)
    └── PinningError                 capture.pinning: a core that does not exist, ...
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import ring
from ring.errors import CaptureError, ConfigError

from . import __version__, sharding
from .connection import Connection, Timing
from .pinning import lock_memory, pin
from .repair import CHECKSUM_VENUES, ChannelServer, Integrity, channel_path, valid_report
from .status import write_status
from .transport import DEFAULT_MAX_MESSAGE, TRANSPORTS, default_transport
from .venues import VENUES, get as get_venue

log = logging.getLogger("capture.receiver")

#: The frame-header connection id of shard-level records (shard_start/stop,
#: discovery, stats); connections use their plan index, always below it.
SHARD_CONN = 0xFFFF

#: Instruments per connection when not configured (Polymarket: the venue's
#: ~500 tokens; others: a count that keeps subscribe bursts under rate limits).
DEFAULT_PER_CONNECTION = {"kraken": 50, "polymarket": 500, "kraken_futures": 50, "kalshi": 100}


@dataclass
class ReceiverConfig:
    """Everything a receiver needs.  The supervisor builds one per shard.

    Attributes:
        ring: path of the ring file (created by the supervisor, or here if
            ``ring_capacity`` is set and the file is missing).
        venue: ``kraken``, ``polymarket``, ``kraken_futures`` or ``kalshi``.
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
        timing: lifecycle intervals (:class:`capture.connection.Timing`).
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
        kalshi_key_id, kalshi_key_file: Kalshi handshake credentials.
        integrity: check sequence numbers, accept the checksum validator's
            reports, repair per symbol.
        repair_burst, repair_window: per-symbol repair limit: at most
            ``repair_burst`` repairs per ``repair_window`` seconds (token bucket).
        integrity_socket: the integrity channel's path (default
            :func:`capture.repair.channel_path` of ``ring``; Kraken spot only).
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
        if self.poll_interval <= 0:
            raise ConfigError(None, "poll_interval", "must be > 0")
        if self.venue == "kalshi" and bool(self.kalshi_key_id) != bool(self.kalshi_key_file):
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
        return self.per_connection or DEFAULT_PER_CONNECTION.get(self.venue, 50)


def explicit_assignment(cfg: ReceiverConfig) -> dict[str, list[str]]:
    """Connection name -> instruments, from the explicit lists (no discovery)."""
    if cfg.connections:
        groups = [list(g) for g in cfg.connections if g]
    else:
        syms = list(dict.fromkeys(cfg.symbols or []))
        groups = [syms[i:i + cfg.capacity] for i in range(0, len(syms), cfg.capacity)]
    return {f"{cfg.venue}-{i}": g for i, g in enumerate(groups)}


def plan_assignment(cfg: ReceiverConfig, units: list[sharding.Unit]) -> dict[str, list[str]]:
    """This shard's slice of the deterministic plan (empty connections dropped)."""
    p = sharding.plan(cfg.venue, units, shards=cfg.shards, capacity=cfg.capacity,
                      min_connections=cfg.min_connections)
    return {c.id: list(c.members) for c in p.for_shard(cfg.shard) if c.members}


async def discover_units(cfg: ReceiverConfig) -> list[sharding.Unit]:
    """Fetch the venue's instruments and turn them into placement units.

    Raises:
        DiscoveryError: a page kept failing (nothing partial is returned).
    """
    from . import discovery as d
    base = cfg.discovery_url
    kw = {"base_url": base} if base else {}
    if cfg.venue == "kraken":
        return sharding.symbol_units(p.symbol for p in await d.fetch_kraken_pairs(**kw))
    if cfg.venue == "polymarket":
        ms = await d.fetch_gamma_markets(**kw)
        return sharding.group_units((m.condition_id, m.token_ids) for m in ms)
    if cfg.venue == "kraken_futures":
        return sharding.symbol_units(i.symbol for i in await d.fetch_futures_instruments(**kw))
    if cfg.venue == "kalshi":
        return sharding.symbol_units(m.ticker for m in await d.fetch_kalshi_markets(**kw))
    raise ConfigError(None, "venue", f"no discovery for {cfg.venue!r}")


def cap_units(units: list[sharding.Unit], limit: int) -> list[sharding.Unit]:
    """The first units by key whose members fit in ``limit`` (deterministic)."""
    out, n = [], 0
    for u in sorted(units, key=lambda u: u.key):
        if n + u.weight > limit:
            break
        out.append(u)
        n += u.weight
    return out


def _conn_id(name: str, fallback: int) -> int:
    """``kraken-7`` -> 7: plan connection ids are stable across re-discovery,
    so a connection keeps its frame-header id for the life of the deployment."""
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() and int(tail) < SHARD_CONN else fallback


class Receiver:
    """The shard's connections in one event loop.  ``await run()`` until ``stop()``."""

    def __init__(self, cfg: ReceiverConfig, producer: ring.Producer) -> None:
        cfg.validate()
        self.cfg = cfg
        self.producer = producer
        self.venue = get_venue(cfg.venue)
        self.url = cfg.url or self.venue.url
        self.rng = random.Random(cfg.seed)
        self.connections: dict[str, Connection] = {}
        self.options: dict[str, Any] = {"depth": cfg.depth}
        if cfg.channels:
            self.options["channels"] = list(cfg.channels)
        if cfg.kalshi_key_id and cfg.kalshi_key_file:
            from .venues.kalshi import KalshiSigner
            self.options["signer"] = KalshiSigner.from_file(cfg.kalshi_key_id, cfg.kalshi_key_file)
        self._stop: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_reason = "stop requested"
        self.discoveries = 0
        self.integrity: Integrity | None = (
            Integrity(cfg.venue, cfg.repair_burst, cfg.repair_window) if cfg.integrity else None)
        self.channel: ChannelServer | None = None

    # -- control -----------------------------------------------------------------
    def stop(self, reason: str = "stop requested") -> None:
        """Begin a clean shutdown (call in the loop; see :meth:`stop_threadsafe`)."""
        self.stop_reason = reason
        if self._stop is not None:
            self._stop.set()

    def stop_threadsafe(self, reason: str = "stop requested") -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.stop, reason)

    def _record(self, kind: str, **fields: Any) -> None:
        self.producer.write_control(kind, ts=time.time_ns(), conn=SHARD_CONN, **fields)

    # -- connections ----------------------------------------------------------------
    def _new_connection(self, name: str, members: list[str], index: int) -> Connection:
        return Connection(self.producer, _conn_id(name, len(self.connections)), name, self.venue,
                          self.url, members, transport=self.cfg.transport, timing=self.cfg.timing,
                          options=self.options, index=index,
                          rng=random.Random(self.rng.random()),
                          max_message=self.cfg.max_message, integrity=self.integrity)

    def _apply(self, assignment: dict[str, list[str]], reason: str) -> dict[str, Any]:
        """Make the running connections match ``assignment``."""
        added: list[str] = []
        removed: list[str] = []
        started, stopped = [], []
        for name, members in assignment.items():
            c = self.connections.get(name)
            if c is None:
                # staggered within this batch: the k-th new connection waits k steps
                c = self._new_connection(name, members, len(started))
                self.connections[name] = c
                c.start()
                started.append(name)
                if reason != "start":
                    added.extend(members)
            else:
                a, r = c.update_members(members)
                added.extend(a)
                removed.extend(r)
        for name in [n for n in self.connections if n not in assignment]:
            c = self.connections.pop(name)
            removed.extend(c.members)
            c.stop()
            stopped.append(name)
        return {"added": sorted(added), "removed": sorted(removed),
                "connections_started": started, "connections_stopped": stopped}

    async def _assignment(self) -> dict[str, list[str]] | None:
        cfg = self.cfg
        if cfg.symbols or cfg.connections:
            return explicit_assignment(cfg)
        t0 = time.monotonic()
        try:
            units = await discover_units(cfg)
        except CaptureError as exc:
            self._record("discovery_failed", venue=cfg.venue, error=str(exc))
            return None
        self.discoveries += 1
        if cfg.max_instruments:
            units = cap_units(units, cfg.max_instruments)
        a = plan_assignment(cfg, units)
        self._record("discovery", venue=cfg.venue, instruments=sum(u.weight for u in units),
                     shard=cfg.shard, shards=cfg.shards, connections=sorted(a),
                     shard_instruments=sum(map(len, a.values())),
                     duration_s=round(time.monotonic() - t0, 3))
        return a

    # -- the integrity channel -----------------------------------------------------
    def _open_channel(self) -> None:
        """Bind the validator's channel (Kraken spot); a failure is recorded
        and logged, never fatal: capture goes on without checksum repairs."""
        if self.integrity is None or self.cfg.venue not in CHECKSUM_VENUES:
            return
        path = self.cfg.integrity_socket or channel_path(self.cfg.ring)
        try:
            self.channel = ChannelServer(path)
        except OSError as exc:
            log.warning("integrity channel %s: %s", path, exc)
            self._record("integrity_channel_error", path=path, error=str(exc))
            return
        assert self.loop is not None
        self.loop.add_reader(self.channel.fileno(), self._on_reports)
        self._record("integrity_channel", path=path)

    def _close_channel(self) -> None:
        if self.channel is not None:
            if self.loop is not None:
                self.loop.remove_reader(self.channel.fileno())
            self.channel.close()
            self.channel = None

    def _on_reports(self) -> None:
        assert self.channel is not None and self.integrity is not None
        for msg in self.channel.receive():
            self.report(msg)

    def report(self, msg: Any) -> str:
        """Act on one validator report: record it on the connection holding
        the symbol and repair that symbol.  Returns the repair outcome, or
        "bad" for a report that names no known symbol / kind."""
        integ = self.integrity
        if integ is None:
            return "bad"
        conn = None
        if valid_report(msg):
            sym = msg["symbol"]
            conn = next((c for c in self.connections.values() if sym in c.members), None)
        if conn is None:
            integ.count("bad_report")
            return "bad"
        fields = {k: msg.get(k) for k in ("expected", "computed", "frame_seq")
                  if isinstance(msg.get(k), int)}
        return conn.integrity_failure(msg["kind"], msg["symbol"], None, **fields)

    # -- tasks --------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What the status file holds (the schema capture.metrics reads)."""
        conns = []
        for c in self.connections.values():
            st = c.stats()
            conns.append({"id": st["id"], "name": st["conn"], "state": st["state"],
                          "messages": st["messages"], "bytes": st["bytes"],
                          "last_data_ns": st["last_data_ns"] or None,
                          "subscribed": st["subscribed"], "members": st["members"],
                          "reconnects": st["reconnect_reasons"],
                          "silence_timeout": st["silence_timeout"],
                          "malformed": st["malformed"], "refused": st["refused"]})
        gaps = {"malformed": sum(c["malformed"] for c in conns),
                "silence": sum(c["reconnects"].get("silence", 0) for c in conns)}
        integrity: dict[str, Any] = {"enabled": self.integrity is not None}
        if self.integrity is not None:
            counts = self.integrity.counts
            for k in ("seq_gap", "checksum_mismatch"):
                gaps[k] = counts.get(k, 0)
            integrity.update(repairs=counts.get("repair", 0),
                             repairs_suppressed=counts.get("repair_suppressed", 0),
                             bad_reports=counts.get("bad_report", 0),
                             channel=self.channel.path if self.channel is not None else None)
        integrity["auth_failures"] = sum(c.auth_failures for c in self.connections.values())
        return {"role": "receiver", "venue": self.cfg.venue, "shard": self.cfg.shard,
                "transport": self.cfg.transport, "connections": conns,
                "gaps": gaps, "integrity": integrity,
                "discoveries": self.discoveries, "stopping": self._stop is not None and self._stop.is_set()}

    def _write_status(self) -> None:
        if self.cfg.status_file:
            try:
                write_status(self.cfg.status_file, self.status())
            except OSError as exc:  # a status file must never stop the capture
                log.warning("status file %s: %s", self.cfg.status_file, exc)

    async def _poll(self) -> None:
        cfg = self.cfg
        next_stats = time.monotonic() + cfg.stats_interval
        while True:
            await asyncio.sleep(cfg.poll_interval)
            self.producer.poll()
            self._write_status()
            if cfg.stats_interval and time.monotonic() >= next_stats:
                next_stats = time.monotonic() + cfg.stats_interval
                self._record("receiver_stats", connections=[c.stats() for c in self.connections.values()])

    async def _rediscover(self) -> None:
        """Every ``rediscover_interval`` s on a fixed grid; a tick missed
        (discovery took longer than the interval) is skipped, not queued."""
        iv = self.cfg.rediscover_interval
        loop = asyncio.get_running_loop()
        due = loop.time() + iv
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            a = await self._assignment()
            if a is not None:
                change = self._apply(a, "rediscovery")
                self._record("rediscovery", venue=self.cfg.venue, **change,
                             instruments=sum(map(len, a.values())))
            now = loop.time()
            due += iv
            if due <= now:
                skipped = int((now - due) // iv) + 1
                due += skipped * iv
                self._record("rediscovery_skipped", ticks=skipped)

    async def run(self) -> None:
        """Run until :meth:`stop`; writes shard_start / shard_stop."""
        cfg = self.cfg
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._record("shard_start", venue=cfg.venue, shard=cfg.shard, shards=cfg.shards,
                     shard_id=cfg.shard if cfg.shard_id is None else cfg.shard_id,
                     pid=os.getpid(), transport=cfg.transport, url=self.url,
                     cores=sorted(os.sched_getaffinity(0)), version=__version__,
                     epoch=self.producer.epoch)
        tasks = [asyncio.ensure_future(self._poll())]
        self._open_channel()
        try:
            a = await self._assignment()
            while a is None and not self._stop.is_set():
                # No instruments yet (discovery failed): retry on the interval.
                try:
                    await asyncio.wait_for(self._stop.wait(), cfg.rediscover_interval or 30.0)
                except (TimeoutError, asyncio.TimeoutError):
                    a = await self._assignment()
            if a is not None:
                self._apply(a, "start")
                if cfg.discover and not (cfg.symbols or cfg.connections) and cfg.rediscover_interval:
                    tasks.append(asyncio.ensure_future(self._rediscover()))
            await self._stop.wait()
        finally:
            self._close_channel()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            conns = list(self.connections.values())
            for c in conns:
                c.stop()
            pending = [c.task for c in conns if c.task is not None]
            if pending:
                done, not_done = await asyncio.wait(pending, timeout=cfg.timing.close_timeout + 2)
                for t in not_done:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            stats = [c.stats() for c in conns]
            self._record("shard_stop", venue=cfg.venue, shard=cfg.shard, reason=self.stop_reason,
                         frames=sum(s["frames"] for s in stats),
                         malformed=sum(s["malformed"] for s in stats),
                         refused=sum(s["refused"] for s in stats),
                         reconnects=sum(s["reconnects"] for s in stats), connections=stats)
            self.producer.poll()
            self._write_status()

    # -- introspection -------------------------------------------------------------
    def stats(self) -> list[dict[str, Any]]:
        return [c.stats() for c in self.connections.values()]


def open_ring(cfg: ReceiverConfig) -> ring.Producer:
    """The producer for ``cfg.ring``, creating the file first if asked to."""
    if cfg.ring_capacity and not os.path.exists(cfg.ring):
        try:
            ring.create(cfg.ring, cfg.ring_capacity).close()
        except ring.RingExists:
            pass
    return ring.Producer(cfg.ring, frag_timeout=cfg.frag_timeout)


def run_receiver(cfg: ReceiverConfig, *, install_signals: bool = True) -> int:
    """The receiver process body: pin, lock memory, open the ring, run until
    SIGTERM/SIGINT, close.  Returns the exit status (0 on a clean stop).

    Raises:
        CaptureError: configuration problems found before anything runs
            (bad config, core that does not exist, missing ring file...).
    """
    cfg.validate()
    if cfg.cores is not None:
        pin(cfg.cores)
    if cfg.mlock:
        ok, msg = lock_memory(required=cfg.mlock == "require")
        if not ok:
            log.warning("%s", msg)
    producer = open_ring(cfg)
    try:
        rx = Receiver(cfg, producer)

        async def main() -> None:
            loop = asyncio.get_running_loop()
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, rx.stop, f"signal {sig.name}")
            await rx.run()

        asyncio.run(main())
    finally:
        producer.close()
    return 0


# --------------------------------------------------------------------------
# argv
# --------------------------------------------------------------------------

def from_capture_config(conf: Any, shard_id: int, *, ring_path: str | None = None,
                        status_file: str | None = None, timing: dict[str, Any] | None = None,
                        seed: int | None = None) -> ReceiverConfig:
    """The receiver config of shard ``shard_id`` of a :class:`capture.config.Config`
    (what ``capture run --shard N`` starts with ``--config FILE --shard N``).

    The plan's shard index is this shard's position among the venue's shards
    (``Config.venue_shards``), so every host derives the same slice.

    Raises:
        ConfigError: no such shard.
    """
    sh = conf.shard(shard_id)
    vc = conf.venue(sh.venue)
    venue_cls = get_venue(sh.venue)
    order = conf.venue_shards(sh.venue)
    url = vc.url or (venue_cls.demo_url if vc.demo and venue_cls.demo_url else None)
    tkw: dict[str, Any] = {"silence_timeout": sh.silence_timeout or None}
    tkw.update(timing or {})
    explicit = list(sh.instruments)
    per = None
    if explicit and sh.connections:
        per = -(-len(explicit) // sh.connections)   # ceil: spread over that many connections
    channels = list(sh.channels) if sh.venue != "polymarket" else None
    return ReceiverConfig(
        ring=ring_path or conf.ring_path(shard_id), venue=sh.venue, url=url,
        symbols=explicit or None, discover=bool(sh.discovery), discovery_url=vc.rest_url,
        rediscover_interval=sh.rediscover_interval if sh.discovery else 0.0,
        shard=order.index(shard_id), shards=len(order), shard_id=shard_id,
        per_connection=per,
        min_connections=max(1, sh.connections * len(order)) if sh.discovery else 1,
        transport=sh.transport, cores=list(sh.cores) or None, mlock=bool(sh.lock_memory),
        channels=channels, depth=sh.book_depth, timing=Timing(**tkw),
        max_instruments=sh.max_instruments, status_file=status_file, seed=seed,
        kalshi_key_id=vc.key_id if sh.venue == "kalshi" else None,
        kalshi_key_file=vc.key_file if sh.venue == "kalshi" else None)


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
    """argv -> :class:`ReceiverConfig` (raises SystemExit on bad usage)."""
    p = argparse.ArgumentParser(prog="python -m capture.receiver",
                                description="Receive one shard's WebSocket connections into a ring.")
    p.add_argument("--ring", help="ring file (see ring.create); config mode: the config's")
    p.add_argument("--config", help="config mode: a capture TOML file (see capture.config); "
                                    "with --shard N and no --venue (default: the built-in config)")
    p.add_argument("--status-file", help="write the connections' status here every poll")
    p.add_argument("--venue", choices=sorted(VENUES),
                   help="explicit mode: the venue (without it: config mode)")
    p.add_argument("--url", help="WebSocket URL (default: the venue's)")
    p.add_argument("--symbols", type=_list, help="comma-separated instruments")
    p.add_argument("--connection", action="append", type=_list, dest="connections",
                   help="instruments of one connection (repeat for each connection)")
    p.add_argument("--per-connection", type=int, help="instruments per connection")
    p.add_argument("--discover", action="store_true", help="instruments from discovery + sharding")
    p.add_argument("--discovery-url", help="REST base URL for discovery")
    p.add_argument("--rediscover-interval", type=float, default=0.0, help="seconds (0: never)")
    p.add_argument("--shard", type=int, default=0,
                   help="config mode: the shard id; explicit mode: index among --shards")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--min-connections", type=int, default=1)
    p.add_argument("--max-instruments", type=int, default=0,
                   help="discovery: keep at most this many instruments (0: all)")
    p.add_argument("--transport", choices=TRANSPORTS, default=default_transport())
    p.add_argument("--cores", type=_cores, help="CPU cores to pin to, e.g. 1 or 0,1 or 2-3")
    p.add_argument("--mlock", nargs="?", const="try", choices=("try", "require"),
                   help="lock memory (mlockall); 'require' fails when not permitted")
    p.add_argument("--channels", type=_list, help="channels/feeds (venue default if absent)")
    p.add_argument("--depth", type=int, default=10, help="Kraken book depth")
    p.add_argument("--timing", action="append", default=[], metavar="KEY=SECONDS",
                   help="lifecycle interval, e.g. silence_timeout=60 (repeatable); keys: "
                        + ", ".join(f.name for f in dataclasses.fields(Timing)))
    p.add_argument("--poll-interval", type=float, default=1.0)
    p.add_argument("--stats-interval", type=float, default=60.0)
    p.add_argument("--max-message", type=int, default=DEFAULT_MAX_MESSAGE)
    p.add_argument("--ring-capacity", type=int, help="create the ring with this capacity if missing")
    p.add_argument("--frag-timeout", type=float, default=0.1,
                   help="seconds a fragmented (very large) frame may wait for ring room")
    p.add_argument("--seed", type=int, help="seed of the jitter randomness")
    p.add_argument("--kalshi-key-id")
    p.add_argument("--kalshi-key-file")
    p.add_argument("--no-integrity", dest="integrity", action="store_false",
                   help="no sequence checks, no checksum reports, no repairs")
    p.add_argument("--repair-burst", type=int, default=3,
                   help="per-symbol repairs allowed per --repair-window (token bucket)")
    p.add_argument("--repair-window", type=float, default=60.0, help="seconds")
    p.add_argument("--integrity-socket",
                   help="the checksum validator's channel (default: <ring>.integrity.sock)")
    a = p.parse_args(argv)
    tkw: dict[str, Any] = {}
    names = {f.name: f for f in dataclasses.fields(Timing)}
    for item in a.timing:
        k, _, v = item.partition("=")
        if k not in names:
            p.error(f"unknown timing key {k!r}")
        tkw[k] = int(v) if k == "peek_bytes" else (None if v.lower() == "none" else float(v))
    mlock: bool | str = False if a.mlock is None else ("require" if a.mlock == "require" else True)
    if a.venue is None:
        from . import config as capture_config
        conf = capture_config.load(a.config) if a.config else capture_config.default_config()
        cfg = from_capture_config(conf, a.shard, ring_path=a.ring, status_file=a.status_file,
                                  timing=tkw, seed=a.seed)
        cfg.integrity, cfg.integrity_socket = a.integrity, a.integrity_socket
        cfg.repair_burst, cfg.repair_window = a.repair_burst, a.repair_window
        return cfg
    if a.ring is None:
        p.error("--ring is required with --venue")
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


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    try:
        cfg = parse_args(argv)
        return run_receiver(cfg)
    except CaptureError as exc:
        print(f"capture.receiver: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
