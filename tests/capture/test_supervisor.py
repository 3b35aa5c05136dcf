"""The whole shard under `capture run`, against the simulator and a real
nats-server: what the simulator sent == what is on disk == what is in
JetStream, exactly once; ordered SIGTERM; kill -9 of each child; the restart
limit; sd_notify; /metrics and /healthz; the second-supervisor refusal."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import orjson
import psutil
import pytest


import ring  # noqa: E402
from capture.supervisor import NICE  # noqa: E402
from capture.simulator.runner import SimulatorThread  # noqa: E402
from conftest_nats import read_stream  # noqa: E402
from flusher.segments import read as segread  # noqa: E402
from shard import Shard, make_shard, nats_srv, sim  # noqa: E402,F401 - Shard moved to tests/support; fixtures
from timing import timeout, wait_for  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def disk_frames(data_dir: str, venue: str) -> list:
    return list(segread.read(os.path.join(data_dir, venue)))


def sim_sent(sim: SimulatorThread) -> dict[bytes, list[bytes]]:
    """Per connection: the data frames the simulator sent (keyed by the first)."""
    out = {}
    for rec in sim.sim.connections("kraken"):
        sent = [bytes(x) for x in rec.sent]
        if sent:
            out[sent[0]] = sent
    return out


def check_exactly_once(shard: Shard, sim: SimulatorThread, nats_url: str) -> tuple[list, list]:
    frames = disk_frames(shard.data_dir, "kraken")
    seqs = [f.seq for f in frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "disk: every frame once, in order"
    # Every frame the simulator sent is on disk, in order, byte for byte:
    # each simulated connection's frames are one contiguous run of the
    # frames the receiver recorded for one of its connections.
    by_conn: dict[int, list[bytes]] = {}
    for f in frames:
        if f.type == ring.FrameType.DATA:
            by_conn.setdefault(f.conn, []).append(bytes(f.payload))
    sent_by_sim = sim_sent(sim)
    assert sent_by_sim
    for first, sent in sent_by_sim.items():
        conn = next((c for c, lst in by_conn.items() if first in lst), None)
        assert conn is not None, "a simulated connection's frames are missing on disk"
        lst = by_conn[conn]
        i = lst.index(first)
        assert lst[i:i + len(sent)] == sent, "frames missing, reordered or altered on disk"
    # JetStream holds exactly the frames on disk, once each.
    msgs = asyncio.run(read_stream([nats_url], "T_KRAKEN"))
    by_seq = {}
    for m in msgs:
        assert m.seq not in by_seq, f"duplicate sequence {m.seq} in the stream"
        by_seq[m.seq] = m
    assert sorted(by_seq) == seqs, "stream and disk hold the same sequences"
    for f in frames:
        assert by_seq[f.seq].data == bytes(f.payload)
    return frames, msgs


def test_shard_end_to_end_exactly_once_across_sigterm(make_shard, sim, nats_srv):
    sh = make_shard()
    wait_for(sh.children_up, 60, "all three children attached to the ring")
    wait_for(lambda: (sh.stats() or {}).get("frames", 0) > 500, 60, "frames flowing")
    assert sh.stop() == 0, sh.stderr[-3000:]
    frames, msgs = check_exactly_once(sh, sim, nats_srv.url)
    kinds = [orjson.loads(f.payload).get("kind") for f in frames if f.type == ring.FrameType.CONTROL]
    assert kinds[0] == "shard_start" and kinds[-1] == "shard_stop"
    assert any(m.subject.startswith("t.kraken.book.") for m in msgs)
    # nothing was left in the ring: every reader drained to the producer's end
    st = ring.stats(sh.ring_path)
    assert all(r["lag_frames"] == 0 for r in st["readers"]), st["readers"]


@pytest.mark.parametrize("child", ["flusher", "publisher", "receiver"])
def test_kill9_child_is_restarted_alone(make_shard, sim, nats_srv, child):
    sh = make_shard()
    wait_for(sh.children_up, 60, "children up")
    wait_for(lambda: (sh.stats() or {}).get("frames", 0) > 300, 60, "frames flowing")
    pids = {n: sh.child_pid(n) for n in ("receiver", "flusher", "publisher")}
    os.kill(pids[child], signal.SIGKILL)
    wait_for(lambda: sh.children_up() and sh.child_pid(child) != pids[child], 60, f"{child} restarted")
    for other in set(pids) - {child}:
        assert sh.child_pid(other) == pids[other], f"{other} was disturbed"
    # capture to disk wins the CPU: the publisher runs at a lower priority,
    # a restarted one too (supervisor.NICE)
    base = psutil.Process(sh.proc.pid).nice()
    assert {n: psutil.Process(sh.child_pid(n)).nice() - base for n in pids} == \
        {"receiver": 0, "flusher": 0, "publisher": NICE["publisher"]}
    before = sh.stats()["frames"]
    wait_for(lambda: sh.stats()["frames"] > before + 200, 60, "frames flowing after the restart")
    assert sh.stop() == 0, sh.stderr[-3000:]
    frames = disk_frames(sh.data_dir, "kraken")
    seqs = [f.seq for f in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "no sequence missing on disk"
    if child == "receiver":
        # what was still in the dead receiver's socket is lost: a gap record says so
        kinds = [orjson.loads(f.payload) for f in frames if f.type == ring.FrameType.CONTROL]
        assert any(k.get("kind") == "gap" and k.get("reason") == "producer_died" for k in kinds)
    else:
        check_exactly_once(sh, sim, nats_srv.url)


def test_restart_limit_exits_nonzero(make_shard):
    """A child that keeps dying: restarted alone each time, until more than
    5 restarts in 60 s; then the shard stops in order and exits 1."""
    sh = make_shard()
    wait_for(sh.children_up, 60, "children up")
    killed = set()
    while sh.proc.poll() is None and len(killed) < 10:
        pid = wait_for(lambda: sh.children_up() and sh.child_pid("flusher") not in killed
                       and sh.child_pid("flusher") or sh.proc.poll() is not None, 60, "a new flusher")
        if pid is True or sh.proc.poll() is not None:
            break
        killed.add(pid)
        os.kill(pid, signal.SIGKILL)
    assert sh.proc.wait(timeout(120)) == 1
    assert len(killed) == 6, killed  # the limit is 5 restarts
    assert "event=restart_limit child=flusher" in sh.stderr


def test_a_core_that_does_not_exist_is_refused_before_start(make_shard):
    # What would make the receiver fail to pin is found before anything starts.
    sh = make_shard(extra="cores = [4095]")
    assert sh.proc.wait(timeout(120)) == 2
    assert "event=config_error" in sh.stderr and "shard[0].cores" in sh.stderr
    assert "event=child_start" not in sh.stderr


def test_start_that_cannot_complete_is_a_startup_failure(make_shard, tmp_path):
    (tmp_path / "data").write_text("a file where the data directory should be")
    sh = make_shard()
    assert sh.proc.wait(timeout(120)) == 4
    assert "event=startup_failed" in sh.stderr


def test_second_supervisor_refused(make_shard, tmp_path):
    sh = make_shard()
    wait_for(sh.children_up, 60, "children up")
    again = subprocess.run([sys.executable, "-m", "capture.cli", "run", "--shard", "0", "--config", sh.cfg],
                           capture_output=True, text=True, timeout=timeout(60))
    assert again.returncode == 3
    assert "another supervisor" in again.stderr
    assert sh.stop() == 0


def test_config_error_exit_code(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[ring]\ncapacity = 3\n")
    r = subprocess.run([sys.executable, "-m", "capture.cli", "run", "--shard", "0", "--config", str(bad)],
                       capture_output=True, text=True, timeout=timeout(60))
    assert r.returncode == 2 and "ring.capacity" in r.stderr


def test_sd_notify_ready_watchdog_stopping(make_shard, tmp_path):
    path = str(tmp_path / "notify.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.settimeout(timeout(60))
    sh = make_shard(notify=path, watchdog_usec=600_000)  # pings every 0.3 s while healthy

    def recv() -> str:
        return srv.recv(65536).decode()

    msgs = []
    while not any(m.startswith("READY=1") for m in msgs):
        msgs.append(recv())
    assert sh.children_up()
    assert "WATCHDOG=1" in [recv() for _ in range(3)]
    # A hung child (SIGSTOP) stops the pings.
    pid = sh.child_pid("flusher")
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 4.0  # > WATCHDOG_USEC: its heartbeat is stale by then
        while time.monotonic() < deadline:
            srv.settimeout(0.2)
            try:
                recv()
            except TimeoutError:
                pass
        srv.settimeout(2.5)
        late = []
        try:
            while True:
                late.append(recv())
        except TimeoutError:
            pass
        assert "WATCHDOG=1" not in late, late
    finally:
        os.kill(pid, signal.SIGCONT)
    srv.settimeout(timeout(30))
    got = []
    while "WATCHDOG=1" not in got:
        got.append(recv())
    sh.proc.send_signal(signal.SIGTERM)
    rest = []
    while not any(m.startswith("STOPPING=1") for m in rest):
        rest.append(recv())
    assert sh.proc.wait(timeout(120)) == 0
    srv.close()


def test_sd_notify_extends_the_stop_timeout_while_a_drain_runs(make_shard, tmp_path):
    """A drain that outlasts systemd's stop timeout must not be killed: the
    supervisor sends EXTEND_TIMEOUT_USEC (and says why in STATUS) while it
    waits.  The flusher is held with SIGSTOP so its drain is still pending
    when the stop reaches it."""
    path = str(tmp_path / "notify.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.settimeout(timeout(60))
    sh = make_shard(notify=path)
    msgs = []
    while not any(m.startswith("READY=1") for m in msgs):
        msgs.append(srv.recv(65536).decode())
    pid = sh.child_pid("flusher")
    os.kill(pid, signal.SIGSTOP)
    try:
        sh.proc.send_signal(signal.SIGTERM)
        got = []
        while not any(m.startswith("STATUS=stopping: waiting for the flusher") for m in got):
            got.append(srv.recv(65536).decode())
        ext = [m for m in got if m.startswith("EXTEND_TIMEOUT_USEC=")]
        assert ext, got
        assert int(ext[-1].split("=", 1)[1]) >= 1_000_000
    finally:
        os.kill(pid, signal.SIGCONT)
    assert sh.proc.wait(timeout(120)) == 0
    srv.close()


def test_metrics_and_healthz(make_shard, sim):
    from prometheus_client.parser import text_string_to_metric_families
    sh = make_shard()
    port = sh.metrics_port()
    wait_for(sh.children_up, 60, "children up")

    def scrape() -> dict:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        out = {}
        for fam in text_string_to_metric_families(body):
            for s in fam.samples:
                out.setdefault(s.name, []).append(s)
        return out

    def total(m: dict, name: str) -> float:
        return sum(s.value for s in m.get(name, []))

    def health() -> tuple[int, dict]:
        try:
            r = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10)
            return r.status, orjson.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, orjson.loads(e.read())

    wait_for(lambda: total(scrape(), "capture_messages_total") > 100, 60, "messages counted")
    m1 = scrape()
    for name in ("capture_websocket_connected", "capture_bytes_total", "capture_idle_seconds",
                 "capture_markets", "capture_subscriptions", "capture_ring_fill_ratio", "capture_flusher_bytes_total",
                 "capture_publisher_acked_total", "capture_publisher_lag_frames",
                 "capture_ring_dropped_total", "capture_gaps_total", "capture_flusher_fsync_seconds_bucket",
                 "capture_exchange_lag_seconds_bucket"):
        assert name in m1, name
    wait_for(lambda: total(scrape(), "capture_flusher_bytes_total") > total(m1, "capture_flusher_bytes_total"),
             30, "flusher bytes move")
    wait_for(lambda: health()[0] == 200, 60, "healthy")
    sim.inject("kraken", "silence")  # connections stay up (pongs), data stops
    code, body = None, None

    def unhealthy() -> bool:
        nonlocal code, body
        code, body = health()
        return code == 503

    wait_for(unhealthy, 60, "/healthz to report the silence")
    assert any("idle" in r or "stale" in r or "connecting" in r or "backing" in r for r in body["reasons"]), body
    assert sh.stop() == 0


def test_second_signal_stops_fast_without_corrupting(make_shard, nats_srv):
    sh = make_shard()
    wait_for(sh.children_up, 60, "children up")
    wait_for(lambda: (sh.stats() or {}).get("frames", 0) > 300, 60, "frames flowing")
    nats_srv.stop()  # the publisher's drain now waits for acks that cannot come
    sh.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "event=shutdown fast=false" in sh.stderr, 60, "the ordered stop to begin")
    sh.proc.send_signal(signal.SIGTERM)  # while the publisher cannot finish its drain
    code = sh.proc.wait(timeout(60))
    assert code in (0, 1), sh.stderr[-2000:]
    assert "event=fast_stop" in sh.stderr or "event=shutdown fast=true" in sh.stderr
    from flusher.segments import tools as cli
    assert cli.main_verify(["-q", sh.data_dir]) == 0, "a fast stop must never leave corruption"
