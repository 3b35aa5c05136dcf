"""Issue 13, scenario 2: a NATS problem never stops disk capture.

NATS refuses the shard's credentials from the start and for 30 s: the shard
stays up, the publisher stays up retrying (no restarts), /healthz fails and
says why, the metrics count the refusals, and the receiver and flusher go on
writing to disk.  Then the server accepts the credentials: the publisher
connects without a restart and JetStream gets every frame on disk, once.
A publisher that keeps dying (past its restart budget) does not stop the
shard either.
"""
import asyncio
import os
import signal
import time

import orjson
import pytest

import ring
from conftest_nats import read_stream
from faultshard import assert_sequences_whole, figures
from flusher.publisher.nats_embedded import NatsServer
from timing import timeout, wait_for

pytestmark = pytest.mark.timeout(900)

REFUSED_FOR = 30.0  # seconds, as in the issue (the shard used to stop after 23 s)


def _flushed(sh) -> int:
    st = sh.stats() or {"readers": []}
    return next((r["frames_read"] for r in st["readers"] if r["name"] == "flusher"), 0)


def test_nats_refusing_credentials_for_30s_then_accepting(make_shard, tmp_path):
    srv = NatsServer(tmp_path / "nats-a", user="capture", password="not-the-shards").start()
    port = srv.port
    sh = make_shard(f'servers = ["{srv.url}"]\nuser = "capture"\npassword = "the-shards"')
    try:
        wait_for(sh.children_up, 60, "children up")
        pub = sh.child_pid("publisher")
        wait_for(lambda: 'event=nats_connect_failed state="refusing credentials"' in sh.stderr, 60,
                 "the refusal logged")
        start, last_flushed, samples = time.monotonic(), _flushed(sh), 0
        while time.monotonic() - start < timeout(REFUSED_FOR):
            wait_for(lambda: _flushed(sh) > last_flushed, 30, "the flusher writing to disk meanwhile")
            last_flushed = _flushed(sh)
            assert sh.up(), "the shard stopped over a NATS problem"
            assert sh.child_pid("publisher") == pub, "the publisher was restarted"
            samples += 1
            time.sleep(1.0)
        code, body = sh.get("/healthz")
        health = orjson.loads(body)
        assert code == 503 and any("NATS refusing credentials" in r for r in health["reasons"]), health
        _, metrics = sh.get("/metrics")
        text = metrics.decode()
        assert 'capture_publisher_nats_connected{shard="0",venue="kraken"} 0.0' in text
        failures = [ln for ln in text.splitlines() if ln.startswith("capture_publisher_connect_failures_total")]
        assert failures and float(failures[0].split()[-1]) > 0
        assert "the-shards" not in sh.stderr, "a password in the log"
        print(f"\n[NATS refusing credentials {REFUSED_FOR:.0f}s] shard up: {sh.up()}; publisher "
              f"restarts: 0; frames flushed to disk meanwhile: {last_flushed}; {failures[0]}")
        # The server now accepts the shard's credentials, on the same port.
        srv.stop()
        srv = NatsServer(tmp_path / "nats-b", port=port, user="capture", password="the-shards").start()
        wait_for(lambda: sh.get("/healthz")[0] == 200 or
                 "NATS" not in " ".join(orjson.loads(sh.get("/healthz")[1])["reasons"]), 120,
                 "the publisher connected")
        assert sh.child_pid("publisher") == pub, "connected without a restart"
        assert sh.stop() == 0, sh.stderr[-3000:]
        frames = sh.disk_frames()
        fig = figures(sh, frames, "NATS refusing credentials, then accepting")
        assert_sequences_whole(frames)
        assert fig["in_records"] == fig["refused"]
        msgs = asyncio.run(read_stream([srv.url], "T_KRAKEN", user="capture", password="the-shards"))
        seqs = [int(m.headers["Capture-Seq"]) for m in msgs]
        assert len(seqs) == len(set(seqs)), "a frame published twice"
        assert sorted(seqs) == [f.seq for f in frames], "JetStream holds every frame on disk"
        print(f"[NATS refusing credentials, then accepting] frames on disk {len(frames)}, "
              f"in JetStream {len(seqs)}")
    finally:
        srv.stop()


@pytest.mark.parametrize("role", ["publisher", "integrity"])
def test_downstream_child_over_its_restart_budget_does_not_stop_the_shard(make_shard, nats_srv, role):
    """The publisher, or the checksum validator, keeps dying."""
    sh = make_shard(f'servers = ["{nats_srv.url}"]')

    def up():
        st = sh.stats()
        return (sh.children_up() and st["producer"]["pid"]  # the lock is taken before the pid is stored
                and any(r["name"] == role and r["alive"] for r in st["readers"]))

    wait_for(up, 60, "children up")
    receiver, flusher = sh.child_pid("receiver"), sh.child_pid("flusher")
    killed = set()
    while len(killed) < 7:  # the budget is 5 restarts in 60 s
        pid = wait_for(lambda: up() and sh.child_pid(role) not in killed and sh.child_pid(role),
                       120, f"a new {role}")
        killed.add(pid)
        os.kill(pid, signal.SIGKILL)
        assert sh.up(), f"the shard stopped over the {role}"
    wait_for(lambda: any("event=restart_budget_exhausted" in ln and f"child={role}" in ln
                         for ln in sh.stderr.splitlines()), 60, "the budget exhaustion logged")
    code, body = sh.get("/healthz")
    assert code == 503 and any(f"{role} keeps failing" in r for r in orjson.loads(body)["reasons"])
    _, metrics = sh.get("/metrics")
    assert f'capture_child_over_budget{{child="{role}",shard="0",venue="kraken"}} 1.0' in metrics.decode()
    before = _flushed(sh)
    wait_for(lambda: _flushed(sh) > before + 100, 60, "disk capture going on")
    assert (sh.child_pid("receiver"), sh.child_pid("flusher")) == (receiver, flusher)
    wait_for(up, 120, f"the {role} back after its capped backoff")
    assert sh.stop() == 0, sh.stderr[-3000:]
    frames = sh.disk_frames()
    fig = figures(sh, frames, f"{role} over its restart budget")
    print(f"[{role} over its restart budget] {role} killed {len(killed)} times; shard up "
          f"throughout; receiver and flusher never restarted")
    assert_sequences_whole(frames)
    assert fig["in_records"] == fig["refused"]
    assert ring.stats(sh.ring_path)["frames"] > 0
