"""`capture run --shard N`: start, pin, watch and stop one shard's processes.

Theory of operation
-------------------
Start.  Take the shard lock (a second supervisor for the shard is refused),
create or attach the shard's ring, start an embedded nats-server when the
config names none, resolve every child's settings (capture.children) and
write each to an owner-only file in a private directory (the only way
settings reach a child: ``--settings FILE``), then the drains - flusher (tethered) and publisher
(untethered) - and only when both hold their reader slots, the receiver,
pinned to its cores.  READY=1 goes to systemd once the ring is attached and
every child is alive.

Watch.  Every tick: reap exited children and restart each alone, with its
own exponential backoff and its own budget: more than ``restart_limit``
restarts of one child within ``restart_window`` seconds.  Only the children
capture to disk needs (the receiver and the flusher: ESSENTIAL) stop the
shard when over budget - restarting will not fix it, so the shard stops
(ordered) and exits 1 for systemd to handle.  A publisher or checksum
validator over budget is a fault of its own (NATS down, credentials
refused): it keeps being restarted with a capped backoff, logged, counted in
``capture_child_restarts`` and failing /healthz, while disk capture goes on.
WATCHDOG=1 is sent only while every child's heartbeat in the ring advances:
a hung child (alive, lock held, heartbeat frozen) stops the pings and systemd
restarts the unit.

Stop (SIGTERM or SIGINT).  STOPPING=1, then in order: the receiver stops
reading its sockets, closes its connections and writes its drop record and a
stop record (both may use the ring's reserve, so they land even with the ring
full); then, while the flusher still drains, the supervisor settles the ring:
if the receiver was dead (crashed, in backoff) or left drops unrecorded, it
opens the ring as producer itself, which writes the drops owed in the header,
a ``producer_died`` gap naming the window in which the receiver's
connections' data was lost, and a ``shard_stop``, waiting for the flusher to
make room if it must; then the flusher drains the ring again, fsyncs and
closes its segment; the publisher publishes what is left and waits for its
acks.  While a drain runs (each has its own deadline: the drain timeout
plus 10 s), EXTEND_TIMEOUT_USEC every second keeps systemd from killing it.

Fast stop (a second signal: the operator's "stop now").  Every child but the
flusher gets SIGTERM at once; the receiver has FAST_GRACE_S to go (then
SIGKILL); then the ring is settled as above, but with FAST_SETTLE_S to wait
for room (a settle already waiting is cut to that); only then does the
flusher get its SIGTERM, so its final drain carries what the dead receiver
owed to disk; the flusher and the rest have FAST_GRACE_S, then SIGKILL -
which never corrupts a segment (the flusher's recovery truncates a torn
tail) and loses nothing the ring or the segments hold.  The whole fast stop
is bounded by 2 * FAST_GRACE_S + FAST_SETTLE_S.

Exit codes: 0 clean stop (also when a child was already dead at the stop
and its loss is recorded); 1 the receiver or the flusher kept failing
(restart limit) or a drain did not finish; 2 configuration error; 3 another supervisor runs this shard;
4 start-up failure (ring, NATS, a child that never came up).
"""
from __future__ import annotations

import collections
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import ring
from capture import children
from capture.config import Config
from capture.metrics import MetricsServer, ShardView
from capture.sdnotify import Notifier, watchdog_interval
from common import lifeline
from common.log import event as log_event
from common.status import EXIT_DRAIN_UNFINISHED, read_status, status_path, write_status
from common.errors import CaptureError, RingDamaged, RingExists, ShardBusy

log = logging.getLogger("capture.supervisor")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_BUSY, EXIT_STARTUP = 0, 1, 2, 3, 4

#: The children capture to disk needs: only these stop the shard over budget.
ESSENTIAL = frozenset({"receiver", "flusher"})
#: Backoff caps (seconds): an essential child comes back fast; a downstream
#: one (publisher, validator) waiting on NATS need not hammer it.
BACKOFF_CAP = {"essential": 10.0, "other": 30.0}
#: How much lower than the supervisor the downstream children run (nice
#: increments).  Invariant 2 for the CPU: when a host runs out of CPU, the
#: receiver and the flusher (capture to disk) win it, and the publisher falls
#: behind instead; a lapped publisher loses nothing, it catches up from the
#: segment files once the CPU is free.  In the whole-shard benchmark at
#: 2 KiB x 100,000/s, at equal priority the publisher kept up live while the
#: ring refused 13.8% of the frames; with these levels it refused 10.6% (the
#: rest is the disk, taking two 100 MB/s writers there: ours and
#: nats-server's).  Raising a nice value needs no privilege; the increment is
#: relative, so a unit's Nice= still sets the shard's priority.
NICE = {"publisher": 5, "integrity": 10}
#: The fast stop's bounds (seconds): each child's grace before SIGKILL, and
#: the wait for the flusher to make room for the records a dead receiver
#: owed (a few ring writes: they need room only when the ring is full).
FAST_GRACE_S, FAST_SETTLE_S = 5.0, 2.0

@dataclass
class Child:
    role: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    starts: int = 0
    restarts: collections.deque = field(default_factory=lambda: collections.deque(maxlen=64))
    next_start: float = 0.0
    backoff: float = 0.5
    last_exit: int | None = None
    over_budget: bool = False     # a non-essential child past its restart budget

    @property
    def essential(self) -> bool:
        return self.role in ESSENTIAL

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        # No preexec_fn (see common.lifeline): the child is in its own process
        # group (Ctrl-C reaches only us, and we order the stop) and arms its own
        # parent-death signal from the supervisor pid in its environment.
        env = {**os.environ, lifeline.ENV: str(os.getpid())}
        self.proc = subprocess.Popen(self.argv, process_group=0, close_fds=True, env=env)
        self.starts += 1
        if NICE.get(self.role):
            # Still the interpreter's start-up, single-threaded: every thread
            # the child makes later inherits this (nice is per thread).
            try:
                os.setpriority(os.PRIO_PROCESS, self.proc.pid,
                               min(19, os.getpriority(os.PRIO_PROCESS, 0) + NICE[self.role]))
            except OSError as exc:   # gone already: the watch loop sees the exit
                log_event(log, "child_priority_failed", logging.WARNING, child=self.role, error=str(exc))
        log_event(log, "child_start", child=self.role, pid=self.proc.pid, start=self.starts)

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass


class ShardLock:
    """flock on {ring_dir}/shard-N.lock: one supervisor per shard per host."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(self.fd, 32, 0).decode(errors="replace").strip()
            os.close(self.fd)
            raise ShardBusy(path, other) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        os.close(self.fd)


CommandBuilder = Callable[["Supervisor", str], list[str]]


class Supervisor:
    def __init__(self, cfg: Config, shard_id: int, *, notifier: Notifier | None = None,
                 restart_limit: int = 5, restart_window: float = 60.0, tick: float = 0.25,
                 child_start_timeout: float = 30.0, metrics_port: int | None = None,
                 commands: dict[str, CommandBuilder] | None = None) -> None:
        self.cfg = cfg
        self.shard = cfg.shard(shard_id)
        self.venue = self.shard.venue
        self.ring_path = cfg.ring_path(shard_id)
        self.notifier = notifier or Notifier()
        self.restart_limit, self.restart_window = restart_limit, restart_window
        self.tick = tick
        self.child_start_timeout = child_start_timeout
        if metrics_port is None:  # port_base 0: an ephemeral port (tests, demo)
            metrics_port = cfg.metrics.port_base + shard_id if cfg.metrics.port_base else 0
        self.metrics_port = metrics_port
        self.commands = dict(DEFAULT_COMMANDS)
        self.commands.update(commands or {})
        self.children: dict[str, Child] = {}
        self.nats = None
        self.nats_url: str | None = None
        self.settings: children.ShardChildren | None = None
        self.workdir = tempfile.mkdtemp(prefix=f"capture-shard-{shard_id}-")
        os.chmod(self.workdir, 0o700)
        self._signals = 0
        self._stop = threading.Event()
        self._lock: ShardLock | None = None
        self._metrics: MetricsServer | None = None
        self._last_hb: dict[str, float] = {}
        self._last_watchdog = 0.0
        self.exit_code = EXIT_OK

    # -- paths and commands ---------------------------------------------------------
    def status_file(self, role: str) -> str:
        return status_path(self.cfg.ring.dir, self.shard.id, role)

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals += 1
        self._stop.set()

    # -- the whole life ---------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            ring.ensure_dir(self.cfg.ring.dir)
            self._lock = ShardLock(os.path.join(self.cfg.ring.dir, f"shard-{self.shard.id}.lock"))
        except ShardBusy as e:
            log_event(log, "refused", logging.ERROR, reason=str(e))
            return EXIT_BUSY
        try:
            try:
                self._start()
            except (CaptureError, OSError, TimeoutError) as e:
                log_event(log, "startup_failed", logging.ERROR, reason=str(e))
                self.exit_code = EXIT_STARTUP
                self._shutdown(fast=True)
                return self.exit_code
            self.exit_code = self._watch()
            self._shutdown(fast=self._signals > 1)
            return self.exit_code
        finally:
            self.notifier.close()
            # holds the children's settings files (NATS credentials): never leave them behind
            shutil.rmtree(self.workdir, ignore_errors=True)
            if self._lock:
                self._lock.release()

    def _start(self) -> None:
        os.makedirs(self.cfg.storage.data_dir, mode=0o700, exist_ok=True)
        try:
            ring.create(self.ring_path, self.cfg.ring.capacity, max_frame=self.cfg.ring.max_frame).close()
            log_event(log, "ring_created", path=self.ring_path, capacity=self.cfg.ring.capacity)
        except RingExists:
            ring.attach(self.ring_path).close()  # validates; refuses a bad file loudly
            log_event(log, "ring_attached", path=self.ring_path)
            try:
                ring.stats(self.ring_path)
            except RingDamaged as e:
                # A producer died inside its head update before this start: no
                # reader could attach.  A producer's open repairs it (and
                # records it); the receiver started below finds it whole.
                log_event(log, "ring_damaged", logging.WARNING, action="repair", reason=str(e))
                ring.Producer(self.ring_path).close()
        if self.cfg.nats.embedded:
            from flusher.publisher.nats_embedded import NatsServer
            store = os.path.join(self.cfg.storage.data_dir, "nats", f"shard-{self.shard.id}")
            os.makedirs(store, mode=0o700, exist_ok=True)
            self.nats = NatsServer(store, port=self.cfg.nats.embedded_port).start()
            self.nats_url = self.nats.url
            log_event(log, "nats_embedded", url=self.nats_url)
        # Every child's settings, resolved once from the config, handed over
        # as owner-only files in the private workdir (see capture.children).
        self.settings = children.resolve(self.cfg, self.shard.id, nats_url=self.nats_url)
        readers = list(self.settings.readers())  # with the checksum validator where the venue has one
        for role in (*readers, "receiver"):
            self.children[role] = Child(role, self.commands[role](self, role))
        # Readers first: they must hold their slots before frames flow.
        for role in readers:
            self.children[role].start()
        self._wait_for(lambda: self._readers_alive(set(readers)), "ring readers to attach")
        self.children["receiver"].start()
        self._wait_for(lambda: ring.stats(self.ring_path)["producer"]["alive"], "receiver to attach")
        view = ShardView(self.ring_path, self.cfg.ring.dir, self.shard.id, self.venue,
                         stale_after=max(5.0, self.shard.silence_timeout),
                         data_dir=self.cfg.storage.data_dir,
                         restarts=lambda: {r: max(0, c.starts - 1) for r, c in self.children.items()})
        self._metrics = MetricsServer(view, self.cfg.metrics.bind, self.metrics_port).start()
        self.metrics_port = self._metrics.port
        log_event(log, "metrics_listening", bind=self.cfg.metrics.bind, port=self.metrics_port)
        self._write_own_status()
        self.notifier.ready(self._status_line())
        log_event(log, "shard_ready", venue=self.venue,
                  pids={role: c.pid for role, c in self.children.items()},
                  metrics_port=self.metrics_port)

    def _wait_for(self, pred: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.child_start_timeout
        while not pred():
            for c in self.children.values():
                if c.proc is not None and c.proc.poll() is not None:
                    raise CaptureError(f"{c.role} exited with {c.proc.returncode} while waiting for {what}")
            if self._stop.is_set():
                raise CaptureError(f"stopped while waiting for {what}")
            if time.monotonic() > deadline:
                raise CaptureError(f"timed out waiting for {what}")
            time.sleep(0.02)

    def _readers_alive(self, names: set[str]) -> bool:
        st = ring.stats(self.ring_path)
        return names <= {r["name"] for r in st["readers"] if r["alive"]}

    # -- watching -------------------------------------------------------------------------
    def _watch(self) -> int:
        wd = watchdog_interval()
        last_status = 0.0
        while not self._stop.wait(self.tick):
            now = time.monotonic()
            for c in self.children.values():
                if c.alive():
                    continue
                if c.proc is not None and c.last_exit is None:
                    c.last_exit = c.proc.returncode
                    c.restarts.append(now)
                    recent = sum(1 for t in c.restarts if now - t < self.restart_window)
                    log_event(log, "child_exit", logging.WARNING, child=c.role, code=c.last_exit,
                              restarts_in_window=recent)
                    cap = BACKOFF_CAP["essential" if c.essential else "other"]
                    if recent > self.restart_limit:
                        if c.essential:
                            log_event(log, "restart_limit", logging.ERROR, child=c.role,
                                      limit=self.restart_limit, window_s=self.restart_window,
                                      reason="capture to disk is impossible")
                            self._write_own_status()
                            return EXIT_FAILED
                        if not c.over_budget:
                            log_event(log, "restart_budget_exhausted", logging.ERROR, child=c.role,
                                      limit=self.restart_limit, window_s=self.restart_window,
                                      action="keep_retrying", backoff_cap_s=cap,
                                      reason="disk capture goes on without it")
                        c.over_budget = True
                    elif c.over_budget:
                        c.over_budget = False
                        log_event(log, "restart_budget_recovered", child=c.role)
                    c.next_start = now + min(c.backoff * (2 ** (recent - 1)), cap)
                    self._write_own_status()
                if now >= c.next_start:
                    c.start()
                    c.last_exit = None
                    self._write_own_status()
            if wd is not None and now - self._last_watchdog >= wd and self._heartbeats_advance():
                self.notifier.watchdog()
                self._last_watchdog = now
            if now - last_status >= 5.0:
                self.notifier.status(self._status_line())
                last_status = now
        return EXIT_OK

    def _write_own_status(self) -> None:
        """Each child's restarts for /metrics and /healthz (common.status)."""
        now = time.monotonic()
        try:
            write_status(self.status_file("supervisor"), {"children": {
                c.role: {"alive": c.alive(), "starts": c.starts, "restarts": max(0, c.starts - 1),
                         "restarts_in_window": sum(1 for t in c.restarts if now - t < self.restart_window),
                         "over_budget": c.over_budget, "essential": c.essential,
                         "last_exit": c.last_exit} for c in self.children.values()}})
        except OSError as e:  # never fatal: the capture matters more than the status
            log_event(log, "status_write_failed", logging.DEBUG, reason=str(e))

    def _heartbeats_advance(self) -> bool:
        """True if every child's ring heartbeat moved since the last check."""
        try:
            st = ring.stats(self.ring_path)
        except CaptureError:
            return False
        beats = {"receiver": st["producer"]["heartbeat_age_s"]}
        beats.update({r["name"]: r["heartbeat_age_s"] for r in st["readers"] if r["alive"]})
        if not st["producer"]["alive"] or set(beats) < set(self.children):
            return False
        limit = max(2.0, 2 * (watchdog_interval() or 1.0))
        return all(age is not None and age < limit for age in beats.values())

    def _status_line(self) -> str:
        try:
            st = ring.stats(self.ring_path)
        except CaptureError as e:
            return f"shard {self.shard.id}: ring unreadable: {e}"
        rec = read_status(self.status_file("receiver")) or {}
        conns = rec.get("connections") or []
        live = sum(1 for c in conns if c.get("state") == "live")
        lags = {r["name"]: r["lag_frames"] for r in st["readers"]}
        return (f"{self.venue} shard {self.shard.id}: {live}/{len(conns)} connections live, "
                f"{st['frames']} frames, ring {st['fill_ratio']:.0%} full, "
                f"flusher lag {lags.get('flusher', '?')}, publisher lag {lags.get('publisher', '?')}, "
                f"drops {st['drops']['full'] + st['drops']['too_large']}")

    # -- stopping ---------------------------------------------------------------------------
    def _shutdown(self, fast: bool) -> None:
        self.notifier.stopping()
        log_event(log, "shutdown", fast=fast)
        drain = self.cfg.storage.drain_timeout
        order = [("receiver", 15.0), ("integrity", 10.0), ("flusher", drain + 10.0),
                 ("publisher", drain + 10.0)]
        if fast:
            self._fast_stop([role for role, _ in order])
        else:
            for role, limit in order:
                c = self.children.get(role)
                if c is None:
                    continue
                if role == "flusher" and not self._settle_ring(time.monotonic() + limit):
                    # The receiver is gone: the records it could not write
                    # went in above, while the flusher still made room.  If
                    # they could not, the stop did not keep its promise.
                    if self.exit_code == EXIT_OK:
                        self.exit_code = EXIT_FAILED
                was_alive = c.alive()
                c.signal(signal.SIGTERM)
                code = self._reap(c, time.monotonic() + limit, extend=True)
                if role == "receiver" and code not in (0, None, -signal.SIGTERM):
                    # Dead before or during the stop (crashed, in backoff, or
                    # killed just then): its loss is recorded by _settle_ring,
                    # which decides whether the stop failed.
                    log_event(log, "child_dead_at_stop", logging.WARNING, child=role, code=code)
                elif not was_alive and role != "flusher" and c.proc is not None:
                    # A downstream child dead before the stop: its cursor
                    # holds its place; not a failed stop.
                    log_event(log, "child_dead_at_stop", logging.WARNING, child=role, code=code)
                else:
                    self._stopped(role, code)
                if self._signals > 1 and not fast:
                    return self._shutdown(fast=True)
        if self._metrics:
            self._metrics.stop()
        if self.nats is not None:
            self.nats.stop()
        log_event(log, "stopped", code=self.exit_code)

    def _fast_stop(self, order: list[str]) -> None:
        """The second signal's stop, bounded (see the module docstring).
        The flusher is the only way a record reaches disk, so it is
        signalled last: after the settle put what a dead receiver owed
        into the ring."""
        for role in order:
            if role != "flusher" and role in self.children:
                self.children[role].signal(signal.SIGTERM)
        receiver = self.children.get("receiver")
        if receiver is not None:
            code = self._reap(receiver, time.monotonic() + FAST_GRACE_S)
            if code not in (0, None, -signal.SIGTERM):
                # Dead before or during the stop: the settle below records
                # its loss and decides whether the stop failed.
                log_event(log, "child_dead_at_stop", logging.WARNING, child="receiver", code=code)
        flusher = self.children.get("flusher")
        if flusher is not None and flusher.proc is not None:
            if not self._settle_ring(time.monotonic() + FAST_SETTLE_S) and self.exit_code == EXIT_OK:
                self.exit_code = EXIT_FAILED
            flusher.signal(signal.SIGTERM)
        deadline = time.monotonic() + FAST_GRACE_S
        for role in order:
            if role != "receiver" and role in self.children:
                self._stopped(role, self._reap(self.children[role], deadline))

    def _stopped(self, role: str, code: int | None) -> None:
        """Map a child's exit status at the stop onto ours: a drain that left
        frames unwritten or unacknowledged (EXIT_DRAIN_UNFINISHED), a child
        killed on its stop timeout, or any other failure makes the shard exit 1."""
        if code in (0, None, -signal.SIGTERM):
            return
        if code == EXIT_DRAIN_UNFINISHED:
            log_event(log, "drain_unfinished", logging.WARNING, child=role, code=code)
        else:
            log_event(log, "child_stop", logging.WARNING, child=role, code=code)
        if self.exit_code == EXIT_OK:
            self.exit_code = EXIT_FAILED

    def _settle_ring(self, deadline: float) -> bool:
        """With the receiver stopped: if it died without closing, or left
        drops unrecorded, open the ring as producer and write what is owed
        (ring.Producer does: the drops in the header, producer_died naming
        the window, then our shard_stop), waiting for the flusher to make
        room until ``deadline``.  Never raises: the stop goes on.  False if
        something owed could not be written (it stays in the header)."""
        try:
            try:
                st = ring.stats(self.ring_path)
                prod = st["producer"]
                if prod["alive"] or (prod["state"] != "running" and not st["drops_unrecorded"]):
                    return True
                died, owed = prod["state"] == "running", st["drops_unrecorded"]
            except RingDamaged:
                # It died inside its head update: the producer opened below
                # repairs the ring (ProducerBusy if it is alive after all).
                died, owed = True, -1
            log_event(log, "receiver_loss_recorded", logging.WARNING, died=died, drops_unrecorded=owed)
            with ring.Producer(self.ring_path) as p:
                if died:  # no stop record of its own
                    p.write_control("shard_stop", reserved=True, ts=time.time_ns(), venue=self.venue,
                                    shard=self.shard.id, reason="receiver dead at stop",
                                    written_by="supervisor")
                cut = False
                while p.pending_records and time.monotonic() < deadline:
                    flusher = self.children.get("flusher")
                    if flusher is None or not flusher.alive():
                        break
                    if self._signals > 1 and not cut:
                        # "Stop now": the records are still owed, but the
                        # wait for room is bounded like the rest of a fast stop.
                        cut = True
                        deadline = min(deadline, time.monotonic() + FAST_SETTLE_S)
                        log_event(log, "fast_stop", logging.WARNING, child="supervisor",
                                  reason="second_signal", pending_records=p.pending_records)
                    time.sleep(0.05)
                    p.poll()
                p.close()   # may still write into the reserve
                return not p.pending_records
        except CaptureError as e:
            log_event(log, "settle_failed", logging.ERROR, reason=str(e))
            return False

    def _reap(self, c: Child, deadline: float, extend: bool = False) -> int | None:
        if c.proc is None:
            return None
        last_extend = 0.0
        while True:
            try:
                return c.proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if extend and now - last_extend > 1.0:
                self.notifier.extend_timeout(5.0)  # the drain is alive: give it time
                self.notifier.status(f"stopping: waiting for the {c.role} to drain")
                last_extend = now
            if self._signals > 1 and extend:
                log_event(log, "fast_stop", logging.WARNING, child=c.role, reason="second_signal")
                deadline = min(deadline, now + 5.0)
                extend = False
                c.signal(signal.SIGTERM)
            if now > deadline:
                log_event(log, "child_kill", logging.ERROR, child=c.role, reason="stop_timeout")
                c.signal(signal.SIGKILL)
                return c.proc.wait()


# -- how each child is started --------------------------------------------------------------

def settings_command(sup: Supervisor, role: str) -> list[str]:
    """``python -m MODULE --settings FILE``: the role's settings (resolved in
    ``sup.settings``) written to an owner-only file in the supervisor's
    private workdir; credentials never reach a command line."""
    return [sys.executable] + children.write_settings(sup.workdir, role, sup.settings.roles()[role])


DEFAULT_COMMANDS: dict[str, CommandBuilder] = {role: settings_command for role in children.MODULES}
