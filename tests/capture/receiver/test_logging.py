"""The receiver logs every connection state change (one line each, in the
one format, with shard and role), never one line per message."""
from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys

import pytest

import ring
from common.status import read_status
from capture.simulator import Scenario
from capture.simulator.runner import SimulatorThread
from receiver_helpers import Collector, cleanup, make_ring_dir
from timing import timeout, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.fixture
def ring_path():
    d = make_ring_dir()
    p = os.path.join(d, "shard-5.ring")
    ring.create(p, 1 << 20).close()
    yield p
    cleanup(d)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lines_of(err: str, event: str) -> list[dict[str, str]]:
    out = []
    for line in err.splitlines():
        f = dict(t.split("=", 1) for t in shlex.split(line) if "=" in t)
        if f.get("event") == event:
            out.append(f)
    return out


def run_receiver(ring_path: str, url: str, col: Collector, until: str, n: int, then=None,
                 extra: tuple[str, ...] = ()) -> str:
    cmd = [sys.executable, "-m", "capture.receiver", "--ring", ring_path, "--shard", "5", "--shards", "6",
           "--venue", "kraken", "--symbols", "BTC/USD,ETH/USD", "--channels", "trade", "--url", url,
           "--timing", "stagger=0", "--timing", "stagger_jitter=0.01",
           "--timing", "backoff_base=0.02", "--timing", "backoff_cap=0.05"]
    cmd += list(extra)
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        col.wait_control(until, n=n, seconds=30)
        if then is not None:
            wait_for(then, 20, "the test's condition")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout(20))
        return proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_connect_failures_and_reconnects_are_logged(ring_path):
    col = Collector(ring_path)
    try:
        status = ring_path + ".receiver.json"
        err = run_receiver(ring_path, f"ws://127.0.0.1:{free_port()}/", col, "reconnect", 3,
                           extra=("--status-file", status))
    finally:
        col.stop()
    # the status file says what went wrong last (what `capture status` shows)
    last = read_status(status)["last_error"]
    assert last.startswith("kraken-0: connect_failed") and "refused" in last.lower(), last
    failed = lines_of(err, "connect_failed")
    assert len(failed) >= 3, err
    for f in failed:
        assert f["shard"] == "5" and f["role"] == "receiver" and f["level"] == "warning"
        assert f["conn"] == "kraken-0" and f["error"], f
        assert f["ts"].endswith("Z")
    again = lines_of(err, "reconnect")
    assert len(again) >= 3 and all(float(f["delay"]) >= 0 and f["conn"] == "kraken-0" for f in again)
    assert lines_of(err, "stopped"), "the final state change is logged too"


def test_a_live_connection_logs_state_changes_not_messages(ring_path):
    sc = Scenario(rate=500, heartbeat_interval=3600, seed=1)
    with SimulatorThread(["kraken"], sc) as st:
        col = Collector(ring_path)
        try:
            many = lambda: sum(m.type == int(ring.FrameType.DATA) for m in col.snapshot()) >= 200  # noqa: E731
            err = run_receiver(ring_path, st.url("kraken"), col, "live", 1, then=many)
        finally:
            msgs = col.stop()
    data = sum(1 for m in msgs if m.type == int(ring.FrameType.DATA))
    assert data >= 200
    kinds = [f["event"] for f in (dict(t.split("=", 1) for t in shlex.split(line) if "=" in t)
                                  for line in err.splitlines())]
    assert "connecting" in kinds and "opened" in kinds and "live" in kinds and "closed" in kinds
    assert len(err.splitlines()) < 40, "a line per message would be hundreds"
    closed = lines_of(err, "closed")
    assert closed[-1]["code"] == "1000" and closed[-1]["by"] == "client"
