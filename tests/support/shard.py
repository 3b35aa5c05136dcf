"""A whole shard under `capture run --shard 0`, against the simulator and a
real nats-server, for the tests that need one (supervisor, operations)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

import ring
from capture.simulator import Scenario
from capture.simulator.runner import SimulatorThread
from flusher.publisher.nats_embedded import NatsServer
from timing import timeout, wait_for


class Shard:
    """A `capture run --shard 0` process with its simulator and NATS."""

    def __init__(self, tmp: str, sim: SimulatorThread, nats_url: str | None, *, venue: str = "kraken",
                 extra: str = "", notify: str | None = None, watchdog_usec: int | None = None,
                 drain_timeout: str = "20s", session: bool = False) -> None:
        """``nats_url`` None: the shard's embedded nats-server.  ``session``:
        the supervisor leads its own session and process group (a test sends
        the group a terminal's Ctrl-C without hitting pytest)."""
        self.tmp = tmp
        self.ring_dir = tempfile.mkdtemp(prefix="capture-sup-", dir="/dev/shm")
        self.data_dir = os.path.join(tmp, "data")
        self.venue = venue
        self.cfg = os.path.join(tmp, "capture.toml")
        with open(self.cfg, "w") as f:
            f.write(f"""
[ring]
dir = "{self.ring_dir}"
capacity = "1MiB"
[storage]
data_dir = "{self.data_dir}"
compress = false
drain_timeout = "{drain_timeout}"
[nats]
{f'servers = ["{nats_url}"]' if nats_url else ""}
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

    @property
    def stderr(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout(120))
        return self.proc.returncode

    def metrics_port(self) -> int:
        import re
        pat = re.compile(r"event=metrics_listening bind=\S+ port=(\d+)")
        m = wait_for(lambda: pat.search(self.stderr), 60, "the metrics listener")
        return int(m.group(1))

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        shutil.rmtree(self.ring_dir, ignore_errors=True)


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
    shards = []

    def make(**kw) -> Shard:
        s = Shard(str(tmp_path), sim, nats_srv.url, **kw)
        shards.append(s)
        return s

    yield make
    for s in shards:
        s.cleanup()
