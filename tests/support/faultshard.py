"""A whole shard under `capture run` for the fault suite (tests/faults/):
real processes, real signals, the bundled simulator, and the figures each
scenario reports (frames refused vs frames in records, shard up or not)."""
from __future__ import annotations

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

import orjson

import ring
from flusher.segments import read as segread
from timing import timeout, wait_for


class FaultShard:
    """A `capture run --shard 0` process.  ``nats`` is the [nats] table body
    (servers, credentials); ``capacity`` the ring size."""

    def __init__(self, tmp: str, sim_url: str, sim_rest: str, nats: str, *, venue: str = "kraken",
                 capacity: str = "1MiB", extra: str = "", ring_dir: str | None = None) -> None:
        self.tmp = tmp
        # ring_dir given: a restart of an earlier shard on its ring
        self.ring_dir = ring_dir or tempfile.mkdtemp(prefix="capture-faults-", dir="/dev/shm")
        self.data_dir = os.path.join(tmp, "data")
        self.venue = venue
        self.cfg = os.path.join(tmp, "capture.toml")
        with open(self.cfg, "w") as f:
            f.write(f"""
[ring]
dir = "{self.ring_dir}"
capacity = "{capacity}"
[storage]
data_dir = "{self.data_dir}"
compress = false
drain_timeout = "20s"
[nats]
{nats}
prefix = "t"
[metrics]
port_base = 0
[venues.{venue}]
url = "{sim_url}"
rest_url = "{sim_rest}"
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
        self.log_path = os.path.join(tmp, f"shard-{time.monotonic_ns()}.log")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "capture.cli", "run", "--shard", "0",
                                      "--config", self.cfg, "--log-level", "INFO"],
                                     env=env, stderr=self._log)
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
        pat = re.compile(r"event=metrics_listening bind=\S+ port=(\d+)")
        m = wait_for(lambda: pat.search(self.stderr), 60, "the metrics listener")
        return int(m.group(1))

    def get(self, path: str) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.metrics_port()}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout(10)) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

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


def disk_frames(shard: FaultShard) -> list:
    return list(segread.read(os.path.join(shard.data_dir, shard.venue)))


def controls(frames: list) -> list[dict]:
    return [orjson.loads(f.payload) for f in frames if f.type == ring.FrameType.CONTROL]


def figures(shard: FaultShard, frames: list, label: str) -> dict:
    """Frames refused (the ring header) against frames in records on disk,
    printed for the suite's report."""
    st = ring.stats(shard.ring_path)
    refused = st["drops"]["full"] + st["drops"]["too_large"]
    ctl = controls(frames)
    in_records = sum(c.get("count", 0) for c in ctl if c.get("kind") == "drop") + \
        sum(1 for c in ctl if c.get("kind") == "oversize")
    data = sum(1 for f in frames if f.type == ring.FrameType.DATA)
    died = [c for c in ctl if c.get("kind") == "gap" and c.get("reason") == "producer_died"]
    out = {"refused": refused, "in_records": in_records, "recorded_counter": st["drops_recorded"],
           "data_on_disk": data, "producer_died_records": len(died),
           "exit": shard.proc.returncode}
    print(f"\n[{label}] frames refused {refused} vs frames in drop records on disk {in_records} "
          f"(header says recorded {st['drops_recorded']}); data frames on disk {data}; "
          f"producer_died records {len(died)}; shard exit code {shard.proc.returncode}")
    return out


def assert_sequences_whole(frames: list) -> None:
    seqs = [f.seq for f in frames]
    assert seqs == sorted(set(seqs)), "disk: every frame once, in order"
