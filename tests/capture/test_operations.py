"""A running shard as an operator sees it: every metric the dashboard and the
alert rules name is exported; the log has one "shard ready" line; a
terminal's Ctrl-C (SIGINT to the whole process group) stops the shard in
order with the embedded nats-server untouched; frames left unacknowledged at
the stop make the shard exit non-zero."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import urllib.request

import psutil
import pytest

from shard import Shard, make_shard, nats_srv, sim  # noqa: F401 - fixtures
from ops_rules import dashboard_and_rule_metrics
from timing import timeout, wait_for

pytestmark = pytest.mark.timeout(300)


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, list] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        assert m, line
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out.setdefault(m.group(1), []).append((labels, float(m.group(4))))
    return out


def events(log: str, name: str) -> list[dict[str, str]]:
    out = []
    for line in log.splitlines():
        try:
            f = dict(t.split("=", 1) for t in shlex.split(line) if "=" in t)
        except ValueError:
            continue
        if f.get("event") == name:
            out.append(f)
    return out


def test_every_metric_the_dashboard_and_rules_name_is_exported(make_shard):
    sh = make_shard()
    wait_for(sh.children_up, 60, "all children attached to the ring")
    port = sh.metrics_port()
    needed = dashboard_and_rule_metrics()
    assert len(needed) > 20

    last: list[set[str]] = [needed]

    def all_there() -> bool:
        last[0] = needed - set(scrape(port))
        return not last[0]
    # histograms appear with their first sample (an ack, an fsync): wait for traffic
    try:
        wait_for(all_there, 90, "every metric the dashboard and rules name")
    except AssertionError:
        raise AssertionError(f"not exported: {sorted(last[0])}") from None
    m = scrape(port)
    # one connection label everywhere, as in the logs and records
    conns = {lab["connection"] for lab, _ in m["capture_websocket_connected"]}
    assert conns and all(re.fullmatch(r"kraken-\d+", c) for c in conns), conns
    # markets and subscriptions are different gauges: 3 channels per market here
    markets = sum(v for _, v in m["capture_markets"])
    subs = sum(v for _, v in m["capture_subscriptions"])
    assert markets == 6 and subs == 3 * markets, (markets, subs)
    # the process metrics of every process of the shard
    children = {lab["child"] for lab, _ in m["capture_process_resident_memory_bytes"]}
    assert {"supervisor", "receiver", "flusher", "publisher", "integrity"} <= children
    (info,) = m["capture_build_info"]
    assert info[0]["version"] and info[1] == 1.0
    # one publisher-lag series: the reader-lag family leaves the publisher out
    assert "publisher" not in {lab["reader"] for lab, _ in m["capture_reader_lag_frames"]}
    # `capture status` on the running shard: real msgs/s, typed, the same lag figure
    r = subprocess.run([sys.executable, "-m", "capture.cli", "status", "--ring-dir", sh.ring_dir,
                        "--json", "--interval", "0.5"], capture_output=True, text=True,
                       timeout=timeout(60))
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)
    assert row["venue"] == "kraken" and row["receiver"] == "up" and row["connections_live"] == 1
    assert row["msgs_per_s"] > 0 and isinstance(row["publisher_lag"], int) and row["error"] is None
    ready = events(sh.stderr, "shard_ready")
    assert len(ready) == 1 and ready[0]["role"] == "supervisor" and ready[0]["shard"] == "0"
    assert sh.stop() == 0


def test_terminal_ctrl_c_stops_the_shard_in_order(tmp_path, sim):  # noqa: F811
    """SIGINT to the supervisor's whole process group, as a terminal sends it.
    The embedded nats-server is in its own session, so it is still there
    while the publisher drains: the stop is ordered and clean (exit 0)."""
    sh = Shard(str(tmp_path), sim, None, session=True)
    try:
        wait_for(sh.children_up, 60, "all children attached to the ring")
        wait_for(lambda: events(sh.stderr, "shard_ready"), 60, "the shard ready line")
        (nats,) = events(sh.stderr, "nats_embedded")
        pids = {name: sh.child_pid(name) for name in ("receiver", "flusher", "publisher")}
        (nats_proc,) = [p for p in psutil.Process(sh.proc.pid).children() if "nats-server" in p.name()]
        pids["nats-server"] = nats_proc.pid
        for name, pid in pids.items():
            assert os.getpgid(pid) != sh.proc.pid, f"{name} is in the supervisor's group"
        wait_for(lambda: (sh.stats() or {}).get("frames", 0) > 200, 60, "frames flowing")
        os.killpg(sh.proc.pid, signal.SIGINT)
        code = sh.proc.wait(timeout(120))
        log = sh.stderr
        assert code == 0, log[-3000:]
        assert events(log, "shutdown")[0]["fast"] == "false"
        assert not events(log, "drain_unfinished") and not events(log, "child_kill")
        assert events(log, "stopped")[-1]["code"] == "0"
        assert nats["url"].startswith("nats://")
    finally:
        sh.cleanup()


def test_unacknowledged_frames_at_stop_exit_non_zero(tmp_path, sim):  # noqa: F811
    """NATS never answers: the frames reach the disk, none is acknowledged;
    at the stop the publisher reports its unfinished drain through its exit
    code and the supervisor exits 1, saying which child."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"nats://127.0.0.1:{s.getsockname()[1]}"
    sh = Shard(str(tmp_path), sim, dead, drain_timeout="1s")
    try:
        wait_for(sh.children_up, 60, "all children attached to the ring")
        wait_for(lambda: (sh.stats() or {}).get("frames", 0) > 100, 60, "frames flowing")
        code = sh.stop()
        log = sh.stderr
        assert code == 1, log[-3000:]
        (unfinished,) = events(log, "drain_unfinished")
        assert unfinished["child"] == "publisher" and unfinished["code"] == "75"
        assert events(log, "stopped")[-1]["code"] == "1"
    finally:
        sh.cleanup()
