"""Fixtures and helpers for the publisher's tests: real nats-server processes
on loopback (free ports), a ring with a load generator, the disk flusher and
the publisher as child processes, and a reader of everything a stream holds.

Imported by the publisher's test files (``from conftest_nats import *``);
deliberately not a conftest.py, which belongs to the flusher's tests as a whole.
"""
from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest


import nats  # noqa: E402

import ring  # noqa: E402
from flusher.publisher.nats_embedded import NatsCluster, NatsServer  # noqa: E402
from timing import timeout, wait_for  # noqa: E402

__all__ = ["nats_server", "nats_cluster", "nats_server_factory", "shard", "Shard", "Load",
           "StoredMsg", "read_stream", "run_async", "wait_for", "timeout", "REPO",
           "assert_exactly_once"]

REPO = str(Path(__file__).resolve().parents[2])
VENUE = "testv"
SHARD = 3


@pytest.fixture
def nats_server_factory(tmp_path):
    """Start servers on demand (each with its own data dir); all stopped at teardown."""
    started: list[NatsServer] = []

    def make(**kw) -> NatsServer:
        s = NatsServer(tmp_path / f"nats{len(started)}", **kw)
        started.append(s)
        return s.start()

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def nats_server(nats_server_factory) -> NatsServer:
    """One JetStream-enabled nats-server on a free loopback port."""
    return nats_server_factory()


@pytest.fixture
def nats_cluster(tmp_path):
    """A 3-node JetStream cluster on loopback."""
    c = NatsCluster(tmp_path / "cluster", size=3)
    c.start()
    yield c
    c.stop()


def run_async(coro, seconds: float = 60.0):
    """Run a coroutine to completion with an upper bound (scaled)."""
    return asyncio.run(asyncio.wait_for(coro, timeout(seconds)))


# -- the shard: ring, load, flusher and publisher processes ---------------------------------

def payload_for(i: int, size: int) -> bytes:
    """Frame i of a test load: routable by flusher.publisher.routing.test_subject_fn."""
    head = b"book.SYM-%d|%d|" % (i % 7, i)
    if i % 13 == 5:
        head = b"garbage %d|" % i          # unroutable: must land on .unrouted
    return head + bytes((i + k) & 0xFF for k in range(max(0, size - len(head))))


class Load:
    """Writes frames into the ring from a thread, at a rate or as fast as it can."""

    def __init__(self, path: str, count: int, size: int = 200, rate: float | None = None,
                 control_every: int = 97) -> None:
        self.path, self.count, self.size, self.rate = path, count, size, rate
        self.control_every = control_every
        self.written: dict[int, tuple[int, bytes]] = {}   # seq -> (type, payload)
        self.full = 0
        self.done = threading.Event()
        self.stopped = threading.Event()
        self.error: BaseException | None = None
        self._t = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Load":
        self._t.start()
        return self

    def _run(self) -> None:
        try:
            with ring.Producer(self.path) as p:
                t0 = time.monotonic()
                for i in range(self.count):
                    if self.stopped.is_set():
                        break
                    if self.rate:
                        ahead = t0 + i / self.rate - time.monotonic()
                        if ahead > 0:
                            time.sleep(ahead)
                    if self.control_every and i % self.control_every == 0:
                        typ, body = int(ring.FrameType.CONTROL), json.dumps(
                            {"kind": "test_control", "i": i}).encode()
                    else:
                        typ, body = int(ring.FrameType.DATA), payload_for(i, self.size)
                    st = p.write(body, type=typ)
                    if st == ring.WriteStatus.OK:
                        self.written[p.last_seq] = (typ, body)
                    else:
                        self.full += 1
                        time.sleep(0.0005)
                    if not self.rate and i % 512 == 0:
                        time.sleep(0)      # let the GIL go
        except BaseException as exc:  # noqa: BLE001 - reported by wait()
            self.error = exc
        finally:
            self.done.set()

    def stop(self) -> None:
        self.stopped.set()

    def wait(self, seconds: float = 60.0) -> None:
        wait_for(self.done.is_set, seconds, "the load generator to finish")
        if self.error:
            raise self.error


@dataclass
class Shard:
    """One shard's files and child processes under a test's tmp dir."""
    base: Path
    nats_cfg: dict
    capacity: int = 1 << 20
    venue: str = VENUE
    shard: int = SHARD
    procs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ring_path = str(self.base / "shard.ring")
        self.data_dir = str(self.base / "data")
        os.makedirs(self.data_dir, exist_ok=True)
        ring.create(self.ring_path, capacity=self.capacity).close()

    @property
    def ring_id(self) -> str:
        return ring.stats(self.ring_path)["ring_id"]

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        log = open(self.base / f"{name}.log", "ab")
        try:
            p = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        self.procs[name] = p
        return p

    def start_flusher(self, wait: bool = True) -> subprocess.Popen:
        p = self._spawn("flusher", [
            "-m", "flusher.segments.drain", "--ring", self.ring_path, "--data-dir", self.data_dir,
            "--venue", self.venue, "--shard", str(self.shard), "--fsync", "never",
            "--segment-bytes", str(256 << 10), "--no-hourly"])
        if wait:
            self.wait_attached("flusher")
        return p

    def start_publisher(self, *extra: str, wait: bool = True) -> subprocess.Popen:
        p = self._spawn("publisher", [
            "-m", "flusher.publisher.process", "--ring", self.ring_path, "--venue", self.venue,
            "--shard", str(self.shard), "--segments", self.data_dir, "--route", "test",
            "--nats", json.dumps(self.nats_cfg), "--log-level", "INFO", *extra])
        if wait:
            self.wait_attached("publisher")
        return p

    def wait_attached(self, name: str, seconds: float = 30.0) -> None:
        """Until the named reader is held by a live process."""
        def attached() -> bool:
            p = self.procs.get(name)
            if p is not None and p.poll() is not None:
                raise AssertionError(f"{name} exited with {p.returncode}:\n{self.log(name)[-3000:]}")
            return any(r["name"] == name and r["alive"]
                       for r in ring.stats(self.ring_path)["readers"])
        wait_for(attached, seconds, f"{name} to attach to the ring")

    def log(self, name: str) -> str:
        try:
            return (self.base / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, name: str, seconds: float = 60.0) -> int:
        p = self.procs.pop(name)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout(seconds))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise AssertionError(f"{name} did not stop after SIGTERM:\n{self.log(name)[-3000:]}")

    def kill(self, name: str) -> None:
        p = self.procs.pop(name)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()

    def reader_seq(self, name: str = "publisher") -> int:
        for r in ring.stats(self.ring_path)["readers"]:
            if r["name"] == name:
                return r["next_seq"]
        return -1

    def close(self) -> None:
        for name in list(self.procs):
            self.kill(name)


@pytest.fixture
def shard(tmp_path, nats_server):
    s = Shard(tmp_path / "shard", {"servers": [nats_server.url], "prefix": "prod"})
    yield s
    s.close()


# -- reading a stream back --------------------------------------------------------------------

@dataclass(frozen=True)
class StoredMsg:
    stream_seq: int
    subject: str
    headers: dict
    data: bytes

    @property
    def seq(self) -> int:
        return int(self.headers["Capture-Seq"])


async def read_stream(servers: list[str], stream: str, **connect: object) -> list[StoredMsg]:
    """Every message the stream holds, in stream order."""
    nc = await nats.connect(servers, **connect)
    try:
        info = await nc.jsm().stream_info(stream)
        last = info.state.last_seq
        out: list[StoredMsg] = []
        if not info.state.messages:
            return out
        js = nc.jetstream()
        sub = await js.subscribe(">", stream=stream, ordered_consumer=True,
                                 pending_msgs_limit=1 << 20, pending_bytes_limit=1 << 30)
        while True:
            m = await sub.next_msg(timeout(20))
            md = m.metadata
            out.append(StoredMsg(md.sequence.stream, m.subject, dict(m.headers or {}), m.data))
            if md.sequence.stream >= last:
                break
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


def assert_exactly_once(msgs: list[StoredMsg], expected: dict[int, tuple[int, bytes]],
                        ring_id: str, *, ordered: bool = True, prefix: str = "prod",
                        venue: str = VENUE, shard: int = SHARD) -> None:
    """Each expected frame exactly once, byte for byte, with subject and headers."""
    from flusher.publisher.routing import test_subject_fn
    subj = test_subject_fn(prefix, venue)
    seen: dict[int, StoredMsg] = {}
    dups = []
    for m in msgs:
        s = m.seq
        if s in seen:
            dups.append(s)
        seen[s] = m
    assert not dups, f"{len(dups)} duplicates, first {sorted(dups)[:10]}"
    missing = sorted(set(expected) - set(seen))
    extra = sorted(set(seen) - set(expected))
    assert not missing, f"{len(missing)} frames missing, first {missing[:10]}"
    assert not extra, f"{len(extra)} unexpected frames, first {extra[:10]}"
    for s, (typ, body) in expected.items():
        m = seen[s]
        assert m.data == body, f"payload of {s} differs"
        assert m.headers["Nats-Msg-Id"] == f"{ring_id}:{s}"
        assert m.headers["Capture-Shard"] == str(shard)
        assert int(m.headers["Capture-Recv-Ns"]) > 0
        if typ == int(ring.FrameType.CONTROL):
            want = f"{prefix}.{venue}.control.shard-{shard}"
        else:
            want = subj(body) or f"{prefix}.{venue}.unrouted"
        assert m.subject == want, (s, m.subject, want)
    if ordered:
        order = [m.seq for m in msgs]
        assert order == sorted(order), "stream order differs from ring order"


def disk_frames(data_dir: str, ring_id: str) -> dict[int, tuple[int, bytes]]:
    """Every frame the flusher wrote for this ring: seq -> (type, payload)."""
    from flusher.segments.read import read
    out: dict[int, tuple[int, bytes]] = {}
    for f in read(data_dir):
        out[f.seq] = (f.type, bytes(f.payload))
    return out


def head_seq(ring_path: str) -> int:
    return ring.stats(ring_path)["next_seq"]


__all__ += ["disk_frames", "head_seq", "payload_for"]


def publisher_stats(log_text: str) -> dict:
    """The counters the publisher logs when it exits."""
    for line in reversed(log_text.splitlines()):
        if "event=publisher_stats " in line:
            fields = dict(t.split("=", 1) for t in shlex.split(line) if "=" in t)
            return json.loads(fields["stats"])
    raise AssertionError(f"no stats line in the publisher log:\n{log_text[-3000:]}")


def ring_lapped(shard: "Shard", name: str = "publisher", rings: float = 2.0) -> bool:
    """The producer is more than ``rings`` rings ahead of the reader's committed
    cursor (with a publish window smaller than a ring, its read cursor is lapped)."""
    st = ring.stats(shard.ring_path)
    for r in st["readers"]:
        if r["name"] == name:
            return st["head"] - r["position"] > rings * st["capacity"]
    return False


__all__ += ["publisher_stats", "ring_lapped"]
