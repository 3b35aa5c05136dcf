"""The receiver: one process per shard, one asyncio loop holding the shard's
N WebSocket connections, writing every message it receives into the ring.

How the supervisor starts one (as a child process), from the deployment's
config file (``[[shard]]`` N: venue, cores, instruments or discovery, ...)::

    python -m capture.receiver --config capture.toml --shard 3 --status-file PATH

or with everything explicit (no config file)::

    python -m capture.receiver --ring /dev/shm/capture/shard-3.ring --venue kraken \\
        --symbols BTC/USD,ETH/USD --cores 1 --transport picows

or, in Python, ``run_receiver(ReceiverConfig(...))`` (what ``main`` does after
parsing argv; ``ReceiverConfig.to_argv()`` goes back).  Under ``capture run``
the settings come resolved from the capture config as a file:
``python -m capture.receiver --settings FILE`` (see :mod:`capture.children`).

SIGTERM/SIGINT: connections are closed with a close handshake, a
``shard_stop`` record is written, the producer is closed and the process
exits 0.  A configuration problem found at start (unknown core,
missing ring, bad venue) exits 2 with one line on stderr.

Rules kept here (the hot path itself is :meth:`capture.receiver.connection.Connection._on_message`):

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
  arrive from the validator process (:mod:`capture.receiver.integrity`) over the
  integrity channel (:func:`capture.receiver.repair.channel_path`, a 0600 Unix
  datagram socket next to the ring, bound here).  Each is recorded and
  counted (status ``gaps``) and repaired for that symbol only, at most
  ``repair_burst`` times per ``repair_window`` seconds per symbol (see
  :mod:`capture.receiver.repair`).

Instruments come from an explicit list (no discovery call at all) or from
discovery: ``sharding.plan(venue, units, shards=..).for_shard(shard)``, then
re-discovered every ``rediscover_interval`` seconds (missed ticks are
skipped); new instruments are subscribed on the live connection where the
venue allows, and a ``rediscovery`` record lists what changed.

Errors (rooted in :class:`common.errors.CaptureError`)::

    CaptureError
    ├── ConfigError                  bad configuration (from common.errors)
    └── PinningError                 capture.receiver.pinning: a core that does not exist, ...
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import sys
import time
from typing import Any, Sequence

import ring
from common.errors import CaptureError

from common.version import __version__
from capture.receiver import transport as _transport
from capture.receiver.connection import Connection
from capture.receiver.pinning import lock_memory, pin
from capture.receiver.repair import ChannelServer, Integrity, channel_path, valid_report
from common.lifeline import die_with_parent
from common.log import Throttle, event as log_event, setup as setup_logging
from common.status import write_status
from capture.venues import get as get_venue
# The config and assignment live in their own modules; re-exported here
# because "the receiver's config" is what callers ask this module for.
from capture.receiver.assignment import cap_units, discover_units, explicit_assignment, plan_assignment  # noqa: F401
from capture.receiver.settings import ReceiverConfig, parse_args  # noqa: F401

__all__ = ["SHARD_CONN", "Receiver", "ReceiverConfig", "cap_units",
           "discover_units", "explicit_assignment", "main", "open_ring",
           "parse_args", "plan_assignment", "run_receiver"]

log = logging.getLogger("capture.receiver")
_throttle = Throttle()   # lines that can repeat every stats interval

#: The frame-header connection id of shard-level records (shard_start/stop,
#: discovery, stats); connections use their plan index, always below it.
SHARD_CONN = 0xFFFF

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
        if getattr(self.venue, "max_per_connection", None):
            self.options["max_tokens"] = cfg.capacity   # Polymarket: the token cap per connection
        if cfg.kalshi_key_id and cfg.kalshi_key_file and self.venue.signer is not None:
            self.options["signer"] = self.venue.signer(cfg.kalshi_key_id, cfg.kalshi_key_file)
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
        if self.integrity is None or not self.venue.checksum_validator:
            return
        path = self.cfg.integrity_socket or channel_path(self.cfg.ring)
        try:
            self.channel = ChannelServer(path)
        except OSError as exc:
            log_event(log, "integrity_channel_error", logging.WARNING, path=path, error=exc)
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
        # Keyed by the symbol: while its repair is in flight, further reports
        # for it are recorded ("pending") but send nothing, so a pair that
        # keeps mismatching cannot spend the connection's request budget that
        # other pairs' repairs need (and the per-symbol bucket caps the rest).
        return conn.checks.integrity_failure(msg["kind"], msg["symbol"],
                                             ("checksum", msg["symbol"]), **fields)

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
                "silence": sum(c["reconnects"].get("silence", 0) for c in conns),
                # subscriptions the venue ended (messages lost; resubscribed)
                "subscription_lost": sum(c.subscriptions_lost for c in self.connections.values())}
        integrity: dict[str, Any] = {"enabled": self.integrity is not None}
        if self.integrity is not None:
            counts = self.integrity.counts
            for k in ("seq_gap", "checksum_mismatch"):
                gaps[k] = counts.get(k, 0)
            integrity.update(repairs=counts.get("repair", 0),
                             repairs_suppressed=counts.get("repair_suppressed", 0),
                             bad_reports=counts.get("bad_report", 0),
                             channel=self.channel.path if self.channel is not None else None)
        integrity["auth_failures"] = sum(c.backoff.auth_failures for c in self.connections.values())
        errors = [(c.last_error[0], f"{c.name}: {c.last_error[1]}")
                  for c in self.connections.values() if c.last_error is not None]
        last = max(errors) if errors else None
        return {"role": "receiver", "venue": self.cfg.venue, "shard": self.cfg.shard,
                "last_error": last[1] if last else None, "last_error_ns": last[0] if last else None,
                "transport": self.cfg.transport, "connections": conns,
                "gaps": gaps, "integrity": integrity,
                "discoveries": self.discoveries, "stopping": self._stop is not None and self._stop.is_set()}

    def _write_status(self) -> None:
        if self.cfg.status_file:
            try:
                write_status(self.cfg.status_file, self.status())
            except OSError as exc:  # a status file must never stop the capture
                ok, suppressed = _throttle.allow("status_write_failed")
                if ok:   # once per stats interval while the disk refuses: a burst, then a count
                    log_event(log, "status_write_failed", logging.WARNING, path=self.cfg.status_file,
                              error=exc, **({"suppressed": suppressed} if suppressed else {}))

    async def _poll(self) -> None:
        cfg = self.cfg
        next_stats = time.monotonic() + cfg.stats_interval
        dropping = 0
        while True:
            await asyncio.sleep(cfg.poll_interval)
            pending = self.producer.pending_gap
            self.producer.poll()
            dropping = self._log_drops(dropping, pending, self.producer.pending_gap)
            self._write_status()
            if cfg.stats_interval and time.monotonic() >= next_stats:
                next_stats = time.monotonic() + cfg.stats_interval
                self._record("receiver_stats", connections=[c.stats() for c in self.connections.values()])

    def _log_drops(self, was: int, before: int, after: int) -> int:
        """One line when the ring starts refusing frames and one when the gap
        record is written (with the count), never one per dropped frame.
        Returns the frames still pending."""
        if before and not was:
            log_event(log, "ring_full_dropping", logging.WARNING, dropped=before)
        if before and not after:
            log_event(log, "drop_recorded", logging.WARNING, count=before)
        return after

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
        compiled = cfg.transport == "picows" and _transport._fastpath is not None
        self._record("shard_start", venue=cfg.venue, shard=cfg.shard, shards=cfg.shards,
                     shard_id=cfg.shard if cfg.shard_id is None else cfg.shard_id,
                     pid=os.getpid(), transport=cfg.transport, url=self.url,
                     cores=sorted(os.sched_getaffinity(0)), version=__version__,
                     epoch=self.producer.epoch, listener="compiled" if compiled else "python")
        if cfg.transport == "picows" and not compiled:
            log_event(log, "slow_listener", logging.WARNING, reason=_transport.FASTPATH_ERROR,
                      detail="the compiled picows listener is not available; the Python one is "
                             "several times slower", action="reinstall capture")
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
                done, not_done = await asyncio.wait(pending, timeout=cfg.timing.close_cap + 2)
                for t in not_done:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            stats = [c.stats() for c in conns]
            # reserved: with the ring full (flusher stalled) the stop record,
            # and the drop record owed before it, still land
            self._record("shard_stop", reserved=True, venue=cfg.venue, shard=cfg.shard,
                         reason=self.stop_reason,
                         frames=sum(s["frames"] for s in stats),
                         malformed=sum(s["malformed"] for s in stats),
                         refused=sum(s["refused"] for s in stats),
                         reconnects=sum(s["reconnects"] for s in stats), connections=stats)
            self.producer.poll()
            self._write_status()

    # -- introspection -------------------------------------------------------------
    def stats(self) -> list[dict[str, Any]]:
        return [c.stats() for c in self.connections.values()]


def _shard_from_argv(argv: Sequence[str] | None) -> str | None:
    """The shard for the log lines, before the config is parsed (its errors
    are logged too)."""
    args = list(sys.argv[1:] if argv is None else argv)
    for i, a in enumerate(args):
        if a == "--shard" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--shard="):
            return a.split("=", 1)[1]
    return None


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
            log_event(log, "mlock_failed", logging.WARNING, error=msg)
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


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging("receiver", _shard_from_argv(argv))
    die_with_parent()
    try:
        cfg = parse_args(argv)
        return run_receiver(cfg)
    except CaptureError as exc:
        log_event(log, "startup_failed", logging.ERROR, error=str(exc))
        return 2


if __name__ == "__main__":
    sys.exit(main())
