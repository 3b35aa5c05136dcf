"""A whole shard under `capture run --shard 0`, against the simulator, for the
tests that need one (supervisor, operations, the fault suite): the config it
is given, the process and its log, waiting on its state, stopping it.

:class:`Shard` is the one place a test shard is started; :func:`shards` hands
a test a factory whose shards are all cleaned up at its end (the fixtures
below and the fault suite's build on it).  What only the fault suite needs
(the figures each scenario reports) lives in ``faultshard``."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Callable, Iterator

import pytest

import ring
from capture.simulator import Scenario
from capture.simulator.runner import SimulatorThread
from flusher.publisher.nats_embedded import NatsServer
from flusher.segments import read as segread
from timing import timeout, wait_for

_METRICS = re.compile(r"event=metrics_listening bind=\S+ port=(\d+)")


class Shard:
    """A `capture run --shard 0` process with its simulator and NATS.

    Args:
        tmp: the test's directory (config, data, the shard's log).
        sim: the simulator thread serving ``venue``.
        nats_url: the NATS server; None: the shard's embedded nats-server.
        nats_table: the whole ``[nats]`` table body instead (servers,
            credentials), for a test that sets more than the server.
        capacity: the ring's size.
        ring_dir: an earlier shard's ring directory (a restart on its ring);
            None: a new one in /dev/shm.
        notify, watchdog_usec: systemd's ``NOTIFY_SOCKET`` / ``WATCHDOG_USEC``.
        session: the supervisor leads its own session and process group (a
            test sends the group a terminal's Ctrl-C without hitting pytest).
    """

    def __init__(self, tmp: str, sim: SimulatorThread, nats_url: str | None = None, *,
                 nats_table: str | None = None, venue: str = "kraken", capacity: str = "1MiB",
                 extra: str = "", drain_timeout: str = "20s", ring_dir: str | None = None,
                 notify: str | None = None, watchdog_usec: int | None = None,
                 session: bool = False) -> None:
        self.tmp = tmp
        self.ring_dir = ring_dir or tempfile.mkdtemp(prefix="capture-shard-", dir="/dev/shm")
        self.data_dir = os.path.join(tmp, "data")
        self.venue = venue
        if nats_table is None:
            nats_table = f'servers = ["{nats_url}"]' if nats_url else ""
        self.cfg = os.path.join(tmp, "capture.toml")
        with open(self.cfg, "w") as f:
            f.write(f"""
[ring]
dir = "{self.ring_dir}"
capacity = "{capacity}"
[storage]
data_dir = "{self.data_dir}"
compress = false
drain_timeout = "{drain_timeout}"
[nats]
{nats_table}
prefix = "t"
[metrics]
port_base = 0
[venues.{venue}]
url = "{sim.url(venue)}"
rest_url = "{sim.rest_url(venue)}"
[[shard]]
id = 0
venue = "{venue}"
discovery = true
max_instruments = 6
silence_timeout = "3s"
{extra}
""")
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        if notify:
            env["NOTIFY_SOCKET"] = notify
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        # Logs go to a file: a pipe nobody drains would block the shard.
        self.log_path = os.path.join(tmp, f"shard-{time.monotonic_ns()}.log")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "capture.cli", "run", "--shard", "0",
                                      "--config", self.cfg, "--log-level", "INFO"],
                                     env=env, stderr=self._log, start_new_session=session)
        self.ring_path = os.path.join(self.ring_dir, "shard-0.ring")

    # -- state ---------------------------------------------------------------------
    def stats(self) -> dict | None:
        try:
            return ring.stats(self.ring_path)
        except ring.RingError:
            return None

    def children_up(self) -> bool:
        st = self.stats()
        return bool(st and st["producer"]["alive"]
                    and {"flusher", "publisher"} <= {r["name"] for r in st["readers"] if r["alive"]})

    def child_pid(self, name: str) -> int:
        st = self.stats()
        assert st
        if name == "receiver":
            return st["producer"]["pid"]
        return next(r["pid"] for r in st["readers"] if r["name"] == name)

    def up(self) -> bool:
        return self.proc.poll() is None

    @property
    def stderr(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def metrics_port(self) -> int:
        m = wait_for(lambda: _METRICS.search(self.stderr), 60, "the metrics listener")
        return int(m.group(1))

    def get(self, path: str) -> tuple[int, bytes]:
        """GET a path of the shard's metrics listener: (status, body)."""
        url = f"http://127.0.0.1:{self.metrics_port()}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout(10)) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def disk_frames(self) -> list:
        """Every frame the flusher wrote, in order."""
        return list(segread.read(os.path.join(self.data_dir, self.venue)))

    # -- life ----------------------------------------------------------------------
    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout(120))
        return self.proc.returncode

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        shutil.rmtree(self.ring_dir, ignore_errors=True)


@contextlib.contextmanager
def shards(tmp: str, sim: SimulatorThread) -> Iterator[Callable[..., Shard]]:
    """A factory of :class:`Shard` (its arguments after ``tmp, sim``); every
    shard it made is killed if still running and cleaned up at the end."""
    made: list[Shard] = []

    def make(*args, **kw) -> Shard:
        s = Shard(tmp, sim, *args, **kw)
        made.append(s)
        return s

    try:
        yield make
    finally:
        for s in made:
            s.cleanup()


@pytest.fixture
def nats_srv(tmp_path):
    s = NatsServer(tmp_path / "nats").start()
    yield s
    s.stop()


@pytest.fixture
def sim():
    with SimulatorThread(["kraken"], Scenario(seed=3, rate=300, clock="wall", instruments=6,
                                              heartbeat_interval=0.5)) as st:
        yield st


@pytest.fixture
def make_shard(tmp_path, sim, nats_srv):
    """``make_shard(**kw)``: a shard on the test's nats-server."""
    with shards(str(tmp_path), sim) as make:
        yield lambda **kw: make(nats_srv.url, **kw)
