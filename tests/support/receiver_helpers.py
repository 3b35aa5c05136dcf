"""Helpers for the receiver/connection tests: a real ring in a private
/dev/shm directory, a receiver running in a thread, and a tethered ring
reader that collects every whole message (fragments reassembled)."""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from typing import Any

import orjson

import ring
from capture.receiver.lifecycle import Timing
from capture.receiver.process import Receiver, ReceiverConfig, open_ring
from ring.frame import FrameFlags, FrameType

from timing import timeout, wait_for

DATA, CONTROL = int(FrameType.DATA), int(FrameType.CONTROL)
BINARY = int(FrameFlags.BINARY)

#: Small intervals for tests; no pings and no silence watchdog unless a test asks.
FAST = Timing(connect_timeout=5, subscribe_timeout=5, ping_interval=0, pong_timeout=5,
              silence_timeout=0, backoff_base=0.02, backoff_cap=0.2, stable_after=60,
              stagger=0.0, stagger_jitter=0.01, close_timeout=2)


def make_ring_dir() -> str:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    d = tempfile.mkdtemp(prefix="capture-rx-test-", dir=base)
    os.chmod(d, 0o700)
    return d


@dataclass
class Msg:
    seq: int
    ts: int
    type: int
    flags: int
    conn: int
    payload: bytes
    last_seq: int = -1      # > seq: the ring held it as fragments

    @property
    def control(self) -> dict | None:
        return orjson.loads(self.payload) if self.type == CONTROL else None


class Collector:
    """A tethered reader draining the ring in a thread, keeping copies."""

    def __init__(self, path: str, name: str = "test") -> None:
        self.reader = ring.Reader(path, name, tethered=True)
        self.asm = ring.Assembler()
        self.msgs: list[Msg] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="collector")
        self._thread.start()

    def _drain(self) -> None:
        b = self.reader.read()
        got = []
        for f in b:
            m = self.asm.feed(f.seq, f.ts, f.type, f.flags, f.conn, f.payload)
            if m is not None:
                got.append(Msg(m.seq, m.ts, m.type, m.flags, m.conn, bytes(m.payload), m.last_seq))
        self.reader.commit(b)
        if got:
            with self._lock:
                self.msgs.extend(got)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.reader.wait(0.02):
                self._drain()
        while self.reader.available():
            self._drain()

    def snapshot(self) -> list[Msg]:
        with self._lock:
            return list(self.msgs)

    def controls(self, kind: str | None = None, conn: int | None = None) -> list[dict]:
        out = []
        for m in self.snapshot():
            if m.type == CONTROL:
                c = orjson.loads(m.payload)
                if (kind is None or c.get("kind") == kind) and (conn is None or m.conn == conn):
                    out.append(c)
        return out

    def wait_control(self, kind: str, n: int = 1, seconds: float = 10, **match: Any) -> list[dict]:
        def pred():
            cs = [c for c in self.controls(kind) if all(c.get(k) == v for k, v in match.items())]
            return cs if len(cs) >= n else None
        return wait_for(pred, seconds, f"{n} {kind!r} control record(s) {match or ''}")  # type: ignore

    def stop(self) -> list[Msg]:
        self._stop.set()
        self._thread.join(timeout(10))
        self.reader.close()
        return self.snapshot()


class ReceiverThread:
    """A Receiver on its own event loop in a thread, writing into ``path``."""

    def __init__(self, cfg: ReceiverConfig) -> None:
        self.cfg = cfg
        self.producer = open_ring(cfg)
        self.rx = Receiver(cfg, self.producer)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="receiver")
        self._thread.start()
        wait_for(lambda: self.rx.loop is not None, 10, "receiver loop")

    def _run(self) -> None:
        try:
            asyncio.run(self.rx.run())
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    def call(self, fn, *a):
        """Run fn(*a) in the receiver's loop and return its result."""
        fut = asyncio.run_coroutine_threadsafe(_call(fn, *a), self.rx.loop)
        return fut.result(timeout(10))

    def stop(self) -> None:
        self.rx.stop_threadsafe("test stop")
        self._thread.join(timeout(20))
        assert not self._thread.is_alive(), "receiver did not stop"
        self.producer.close()
        if self.error is not None:
            raise self.error


async def _call(fn, *a):
    return fn(*a)


def control_records(msgs: list[Msg], kind: str | None = None, conn: int | None = None) -> list[dict]:
    """The control records (decoded JSON) among msgs, of this kind and/or connection."""
    out = []
    for m in msgs:
        if m.type == CONTROL and (conn is None or m.conn == conn):
            c = orjson.loads(m.payload)
            if kind is None or c["kind"] == kind:
                out.append(c)
    return out


def sessions(msgs: list[Msg], conn: int) -> list[list[bytes]]:
    """DATA payloads of one connection id, split at each ``opened`` record."""
    out: list[list[bytes]] = []
    for m in msgs:
        if m.conn != conn:
            continue
        if m.type == CONTROL and orjson.loads(m.payload)["kind"] == "opened":
            out.append([])
        elif m.type == DATA:
            assert out, "a data frame before any 'opened' record"
            out[-1].append(m.payload)
    return out


def assert_exactly_sent(msgs: list[Msg], records, conn_ids: list[int]) -> None:
    """Every frame each simulator connection sent is in the ring exactly once,
    in order, byte for byte: the multiset of ring sessions equals the multiset
    of simulator connection records."""
    ring_sessions = sorted(tuple(s) for c in conn_ids for s in sessions(msgs, c))
    sim_sessions = sorted(tuple(r.sent) for r in records)
    assert len(ring_sessions) == len(sim_sessions), (len(ring_sessions), len(sim_sessions))
    for a, b in zip(ring_sessions, sim_sessions):
        assert len(a) == len(b), (len(a), len(b))
        assert a == b


def cleanup(d: str) -> None:
    shutil.rmtree(d, ignore_errors=True)
