"""The receiver process body: malformed frames, a 3 MiB frame, a full ring,
discovery + sharding + re-discovery, configuration, and the real process
(``python -m capture.receiver``) stopping cleanly on SIGTERM."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import orjson
import pytest


import ring  # noqa: E402
from capture.receiver import sharding  # noqa: E402
from capture.venues import discovery  # noqa: E402
from capture.venues.kraken import discovery as kraken_discovery  # noqa: E402
from capture.receiver.lifecycle import State, Timing  # noqa: E402
from capture.receiver.process import (SHARD_CONN, ReceiverConfig, explicit_assignment, parse_args, plan_assignment)  # noqa: E402
from capture.simulator import Scenario, SimulatorThread  # noqa: E402
from receiver_helpers import control_records as _ctl  # noqa: E402
from receiver_helpers import (CONTROL, DATA, FAST, Collector, ReceiverThread,  # noqa: E402
                              assert_exactly_sent, cleanup, make_ring_dir)
from common.errors import ConfigError  # noqa: E402
from timing import timeout, wait_for  # noqa: E402

TRANSPORTS = ["picows", "websockets"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.fixture
def ring_dir():
    d = make_ring_dir()
    yield d
    cleanup(d)


@pytest.fixture
def ring_path(ring_dir):
    p = os.path.join(ring_dir, "shard-0.ring")
    ring.create(p, 16 << 20).close()
    return p


def _all_in_ring(col, sim, venue):
    recs = sim.connections(venue)
    return sum(1 for m in col.snapshot() if m.type == DATA) == sum(r.count for r in recs)


# --------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------

BAD = [b"<html><body>502 Bad Gateway</body></html>",        # non-JSON text
       b'{"channel":"trade","type":"update","data":[{"sym',  # truncated, small
       b'{"channel":"book","data":[' + b'{"price":1.0},' * 700,  # truncated, long
       b"\xff\xfe\x00 not even UTF-8"]                         # invalid UTF-8 text


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_malformed_and_non_json_frames_captured_raw_and_counted(ring_path, transport):
    sc = Scenario(rate=500, max_messages=100, heartbeat_interval=3600, malformed_every=25,
                  seed=13)
    with SimulatorThread(["kraken"], sc) as st:
        cfg = ReceiverConfig(ring=ring_path, venue="kraken", url=st.url("kraken"),
                             symbols=["BTC/USD"], channels=["trade"], transport=transport,
                             timing=FAST, seed=1)
        col = Collector(ring_path)
        rt = ReceiverThread(cfg)
        try:
            wait_for(lambda: st.sim.connections("kraken")
                     and st.sim.connections("kraken")[0].data_count >= 100, 10, "all data")
            for bad in BAD:
                st.inject("kraken", "send", payload=bad, data=False)
            wait_for(lambda: _all_in_ring(col, st.sim, "kraken")
                     and st.sim.connections("kraken")[0].count >= 100 + 4 + 4, 10, "everything")
            wait_for(lambda: _all_in_ring(col, st.sim, "kraken"), 10, "everything in the ring")
            conn = rt.rx.connections["kraken-0"]
            assert conn.state is State.LIVE          # nothing crashed, nothing reconnected
        finally:
            rt.stop()
            msgs = col.stop()
        records = st.sim.connections("kraken")
    assert_exactly_sent(msgs, records, [0])
    ring_payloads = [m.payload for m in msgs if m.type == DATA]
    for bad in BAD:
        assert ring_payloads.count(bad) == 1
    # the scenario's own malformed frames (non-JSON + truncated JSON) plus ours
    scripted = [p for p in records[0].sent if _not_json(p)]
    stop = _ctl(msgs, "shard_stop")[0]
    assert stop["malformed"] == len(scripted) and len(scripted) >= 4 + 4
    assert stop["connections"][0]["reconnects"] == 0


def _not_json(p: bytes) -> bool:
    try:
        orjson.loads(p)
        return False
    except orjson.JSONDecodeError:
        return True


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_3_mib_frame_is_captured_intact(ring_path, transport):
    size = 3 * 1024 * 1024
    sc = Scenario(rate=0, heartbeat_interval=3600, seed=17, large_snapshot_size=size)
    with SimulatorThread(["kraken", "polymarket"], sc) as st:
        cfg = ReceiverConfig(ring=ring_path, venue="polymarket", url=st.url("polymarket"),
                             symbols=st.sim.symbols("polymarket")[:2], transport=transport,
                             timing=FAST, seed=1)
        col = Collector(ring_path)
        rt = ReceiverThread(cfg)
        try:
            wait_for(lambda: st.sim.connections("polymarket")
                     and st.sim.connections("polymarket")[0].data_count >= 1, 10, "the dump")
            st.inject("polymarket", "data", count=5)
            st.inject("polymarket", "large", size=size)
            st.inject("polymarket", "data", count=5)
            wait_for(lambda: st.sim.connections("polymarket")[0].data_count >= 12
                     and _all_in_ring(col, st.sim, "polymarket"), 15, "the large frame")
        finally:
            rt.stop()
            msgs = col.stop()
        records = st.sim.connections("polymarket")
    assert_exactly_sent(msgs, records, [0])
    big = [m for m in msgs if m.type == DATA and len(m.payload) >= size]
    assert len(big) == 2                       # the initial dump and the injected book
    assert big[0].payload.startswith(b"[") and big[0].payload.endswith(b"]")
    assert all(m.last_seq > m.seq for m in big)   # the ring carried them as fragments
    sent_big = [p for p in records[0].sent if len(p) >= size]
    assert [m.payload for m in big] == sent_big


def test_a_full_ring_never_blocks_the_socket(ring_dir):
    """A tethered reader that does not read fills a small ring: frames are
    refused (FULL), counted, the connection stays live, and one gap record
    appears once the reader drains."""
    path = os.path.join(ring_dir, "small.ring")
    ring.create(path, 64 * 1024).close()
    stuck = ring.Reader(path, "flusher", tethered=True)
    sc = Scenario(rate=2000, max_messages=1500, heartbeat_interval=3600, seed=1)
    with SimulatorThread(["kraken"], sc) as st:
        cfg = ReceiverConfig(ring=path, venue="kraken", url=st.url("kraken"),
                             symbols=["BTC/USD", "ETH/USD"], channels=["trade", "ticker"],
                             transport="picows", timing=FAST, seed=1)
        rt = ReceiverThread(cfg)
        try:
            wait_for(lambda: st.sim.connections("kraken")
                     and st.sim.connections("kraken")[0].data_count >= 1500, 20, "all sent")
            conn = rt.rx.connections["kraken-0"]
            wait_for(lambda: conn.frames >= st.sim.connections("kraken")[0].count, 10,
                     "every frame received")
            assert conn.refused > 0 and conn.state is State.LIVE and conn.backoff.reconnects == 0
            # now drain: the pending gap record is written by the next poll
            seen = []
            asm = ring.Assembler()

            def drain():
                while stuck.available():
                    b = stuck.read()
                    for f in b:
                        m = asm.feed(f.seq, f.ts, f.type, f.flags, f.conn, f.payload)
                        if m is not None and m.type == CONTROL:
                            seen.append(orjson.loads(bytes(m.payload)))
                    stuck.commit(b)
                got = [c for c in seen if c["kind"] == "drop"]
                # a record may land in a sliver of room before the ring
                # refuses again: wait for the records of every refusal
                return got if sum(d["count"] for d in got) >= conn.refused else None
            drops = wait_for(drain, 10, "the gap records")
            refused = conn.refused
        finally:
            rt.stop()
            stuck.close()
    assert sum(d["count"] for d in drops) == refused
    assert drops[0]["reasons"] == {"ring_full": drops[0]["count"]}
    assert drops[0]["first_ns"] <= drops[0]["last_ns"]


# --------------------------------------------------------------------------
# Discovery, sharding, re-discovery
# --------------------------------------------------------------------------

def test_discovery_gives_this_shards_slice_of_the_plan(ring_path):
    sc = Scenario(rate=50, heartbeat_interval=3600, instruments=30, seed=2)
    with SimulatorThread(["kraken"], sc) as st:
        cfg = ReceiverConfig(ring=ring_path, venue="kraken", url=st.url("kraken"),
                             discover=True, discovery_url=st.rest_url("kraken"), shard=1,
                             shards=2, per_connection=4, channels=["trade"], timing=FAST,
                             transport="picows", seed=1)
        pairs = kraken_discovery.parse_kraken_asset_pairs(st.sim.rest.asset_pairs())
        want = plan_assignment(cfg, sharding.symbol_units(p.symbol for p in pairs))
        assert want and len(want) < len(sharding.plan(
            "kraken", sharding.symbol_units(p.symbol for p in pairs), shards=2,
            capacity=4).connections)
        col = Collector(ring_path)
        rt = ReceiverThread(cfg)
        try:
            wait_for(lambda: len(rt.rx.connections) == len(want) and all(
                c.state is State.LIVE for c in rt.rx.connections.values()), 10, "live slice")
            got = {n: c.members for n, c in rt.rx.connections.items()}
            ids = {n: c.conn_id for n, c in rt.rx.connections.items()}
        finally:
            rt.stop()
            msgs = col.stop()
    assert got == want
    assert ids == {n: int(n.rsplit("-", 1)[1]) for n in want}   # stable frame-header ids
    d = _ctl(msgs, "discovery")[0]
    assert d["instruments"] == len(pairs) and d["connections"] == sorted(want)
    assert d["shard"] == 1 and d["shards"] == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_rediscovery_subscribes_new_instruments_on_the_live_connection(ring_path, transport):
    sc = Scenario(rate=100, heartbeat_interval=3600, instruments=12, seed=4)
    with SimulatorThread(["kraken"], sc) as st:
        u = st.sim.universe
        later = st.call(lambda: [u.kraken.pop() for _ in range(3)])   # not listed yet
        cfg = ReceiverConfig(ring=ring_path, venue="kraken", url=st.url("kraken"),
                             discover=True, discovery_url=st.rest_url("kraken"),
                             rediscover_interval=0.2, per_connection=100, channels=["trade"],
                             timing=FAST, transport=transport, seed=1)
        col = Collector(ring_path)
        rt = ReceiverThread(cfg)
        try:
            wait_for(lambda: "kraken-0" in rt.rx.connections
                     and rt.rx.connections["kraken-0"].state is State.LIVE, 10, "live")
            before = list(rt.rx.connections["kraken-0"].members)
            st.call(lambda: u.kraken.extend(reversed(later)))          # listed now
            new = sorted(p.symbol for p in later if p.status == "online")
            assert new, "the simulator should list some of them as online"
            rec = col.wait_control("rediscovery", seconds=10, added=new)[0]
            col.wait_control("subscribed", n=len(before) + len(new), seconds=10)
            conn = rt.rx.connections["kraken-0"]
            assert sorted(set(conn.members) - set(before)) == new
            wait_for(lambda: all(r.data_count > 0 for r in st.sim.connections("kraken")), 5, "")
        finally:
            rt.stop()
            msgs = col.stop()
    assert rec["removed"] == [] and rec["connections_started"] == []
    # subscribed on the same connection: one session, no reconnect
    assert len(_ctl(msgs, "opened", conn=0)) == 1
    sent = [c for c in _ctl(msgs, "subscribe_sent", conn=0) if c["reason"] == "rediscovery"]
    assert [c["symbols"] for c in sent] == [new]
    acked = {c["symbol"] for c in _ctl(msgs, "subscribed", conn=0)}
    assert set(new) <= acked
    routed = {orjson.loads(m.payload)["data"][0]["symbol"] for m in msgs
              if m.type == DATA and m.payload.startswith(b'{"channel":"trade"')}
    assert set(new) <= routed


def test_discovery_failure_is_recorded_and_retried(ring_path):
    cfg = ReceiverConfig(ring=ring_path, venue="kraken", url="ws://127.0.0.1:9/v2",
                         discover=True, discovery_url="http://127.0.0.1:9",
                         rediscover_interval=0.1, timing=FAST, transport="picows")
    import capture.receiver.process as rxmod
    calls = []

    async def failing(cfg):
        calls.append(1)
        raise discovery.DiscoveryError(cfg.discovery_url, 1, "connection refused")
    orig = rxmod.discover_units
    rxmod.discover_units = failing
    col = Collector(ring_path)
    try:
        rt = ReceiverThread(cfg)
        try:
            col.wait_control("discovery_failed", n=2, seconds=10)
        finally:
            rt.stop()
    finally:
        rxmod.discover_units = orig
        msgs = col.stop()
    f = _ctl(msgs, "discovery_failed")[0]
    assert "connection refused" in f["error"] and not _ctl(msgs, "connecting")


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------

def test_config_and_argv():
    cfg = parse_args(["--ring", "r", "--venue", "kraken", "--symbols", "A/USD,B/USD,C/USD",
                      "--per-connection", "2", "--cores", "0-1", "--transport", "websockets",
                      "--timing", "silence_timeout=30", "--timing", "peek_bytes=200",
                      "--mlock"])
    assert cfg.symbols == ["A/USD", "B/USD", "C/USD"] and cfg.cores == [0, 1]
    assert cfg.timing.silence_timeout == 30 and cfg.timing.peek_bytes == 200
    assert cfg.mlock is True and cfg.transport == "websockets"
    assert explicit_assignment(cfg) == {"kraken-0": ["A/USD", "B/USD"], "kraken-1": ["C/USD"]}
    cfg = parse_args(["--ring", "r", "--venue", "polymarket", "--connection", "1,2",
                      "--connection", "3"])
    assert explicit_assignment(cfg) == {"polymarket-0": ["1", "2"], "polymarket-1": ["3"]}
    for bad in (dict(symbols=None), dict(transport="x"), dict(shard=2, shards=2),
                dict(per_connection=0), dict(venue="nasdaq")):
        kw = {**dict(ring="r", venue="kraken", symbols=["A"]), **bad}
        with pytest.raises(ConfigError):
            ReceiverConfig(**kw).validate()
    with pytest.raises(SystemExit):
        parse_args(["--ring", "r", "--venue", "kraken", "--timing", "nope=1"])
    # a supervisor can hand a config to a child process as argv
    full = ReceiverConfig(ring="r", venue="polymarket", url="ws://h/ws/market",
                          connections=[["1", "2"], ["3"]], cores=[1], mlock="require",
                          transport="websockets", timing=Timing(silence_timeout=None, stagger=0.5),
                          shard=2, shards=4, seed=7, rediscover_interval=30.0)
    assert parse_args(full.to_argv()) == full
    disc = ReceiverConfig(ring="r", venue="kraken", discover=True, discovery_url="http://h",
                          per_connection=7, channels=["book"], depth=25, mlock=True)
    assert parse_args(disc.to_argv()) == disc
    assert SHARD_CONN == 0xFFFF


# --------------------------------------------------------------------------
# The process
# --------------------------------------------------------------------------

def receiver_cmd(ring_path, url, *extra):
    return [sys.executable, "-m", "capture.receiver", "--ring", ring_path, "--venue", "kraken",
            "--symbols", "BTC/USD,ETH/USD", "--channels", "trade", "--url", url,
            "--timing", "stagger=0", "--timing", "stagger_jitter=0.01", *extra]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_process_stops_cleanly_on_signal(ring_path, sig):
    sc = Scenario(rate=100, heartbeat_interval=3600, seed=1)
    with SimulatorThread(["kraken"], sc) as st:
        col = Collector(ring_path)
        proc = subprocess.Popen(receiver_cmd(ring_path, st.url("kraken")), cwd=ROOT,
                                stderr=subprocess.PIPE)
        try:
            col.wait_control("live", seconds=20)
            wait_for(lambda: any(m.type == DATA for m in col.snapshot()), 10, "data")
            proc.send_signal(sig)
            rc = proc.wait(timeout(20))
            err = proc.stderr.read().decode()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        wait_for(lambda: st.sim.connections("kraken")[0].closed, 10, "server saw the close")
        close_code = st.sim.connections("kraken")[0].close_code
        msgs = col.stop()
    assert rc == 0, err
    stop = _ctl(msgs, "shard_stop")
    assert len(stop) == 1 and stop[0]["reason"] == f"signal {sig.name}"
    kinds = [c["kind"] for c in _ctl(msgs, conn=0)]
    assert kinds[-2:] == ["closed", "stopped"]
    assert _ctl(msgs, "closed", conn=0)[-1]["code"] == 1000
    assert close_code == 1000                     # a clean close handshake
    assert msgs[-1].type == CONTROL and msgs[-1].conn == SHARD_CONN
    with ring.Reader(ring_path, "after", tethered=False, start="oldest") as rd:
        assert rd.producer_stopped()            # Producer.close() ran


def test_process_reports_config_errors_with_exit_2(ring_dir):
    missing = os.path.join(ring_dir, "nope.ring")
    r = subprocess.run(receiver_cmd(missing, "ws://127.0.0.1:9/v2"), cwd=ROOT,
                       capture_output=True, timeout=timeout(30))
    assert r.returncode == 2
    assert b"no such ring file" in r.stderr


# --------------------------------------------------------------------------
# Config mode: what the supervisor runs
# --------------------------------------------------------------------------

TOML = """
[ring]
dir = "{dir}"
[venues.kraken]
url = "{url}"
rest_url = "http://127.0.0.1:9"
[[shard]]
id = 3
venue = "kraken"
instruments = ["BTC/USD", "ETH/USD", "SOL/USD"]
connections = 2
channels = ["trade"]
cores = [{core}]
silence_timeout = "90s"
[[shard]]
id = 7
venue = "kraken"
discovery = true
max_instruments = 10
rediscover_interval = "10m"
[[shard]]
id = 1
venue = "polymarket"
discovery = true
"""


def test_the_config_resolves_each_shard_its_receiver(ring_dir):
    from capture import config as cc
    from capture.children import receiver_settings as from_capture_config
    from capture.receiver.pinning import online_cores
    conf = cc.loads(TOML.format(dir=ring_dir, url="ws://127.0.0.1:1/v2", core=online_cores()[-1]))
    a = from_capture_config(conf, 3, status_file="/tmp/x.json")
    assert (a.venue, a.shard, a.shards, a.shard_id) == ("kraken", 0, 2, 3)
    assert a.ring == os.path.join(ring_dir, "shard-3.ring") and a.url == "ws://127.0.0.1:1/v2"
    assert explicit_assignment(a) == {"kraken-0": ["BTC/USD", "ETH/USD"], "kraken-1": ["SOL/USD"]}
    assert a.cores == [online_cores()[-1]] and a.channels == ["trade"]
    assert a.timing.silence_timeout == 90 and a.status_file == "/tmp/x.json"
    b = from_capture_config(conf, 7)
    assert (b.shard, b.shards, b.discover, b.max_instruments) == (1, 2, True, 10)
    assert b.rediscover_interval == 600 and b.discovery_url == "http://127.0.0.1:9"
    c = from_capture_config(conf, 1)
    assert (c.venue, c.shard, c.shards, c.channels) == ("polymarket", 0, 1, None)
    with pytest.raises(ConfigError):
        from_capture_config(conf, 99)


def test_supervisor_style_start_writes_status_and_stops_cleanly(ring_dir):
    """``python -m capture.receiver --settings FILE``, the settings resolved
    from the config, as capture.supervisor starts it."""
    import dataclasses

    from capture import children, config as cc
    from capture.receiver.pinning import online_cores
    from common.status import read_status
    sc = Scenario(rate=100, heartbeat_interval=3600, seed=1)
    with SimulatorThread(["kraken"], sc) as st:
        conf = cc.loads(TOML.format(dir=ring_dir, url=st.url("kraken"), core=online_cores()[-1]))
        rx = children.resolve(conf, 3).receiver
        rx = dataclasses.replace(rx, timing=dataclasses.replace(rx.timing, stagger=0.01))
        path = os.path.join(ring_dir, "shard-3.ring")
        ring.create(path, 4 << 20).close()
        status = os.path.join(ring_dir, "shard-3.receiver.json")
        assert rx.ring == path and rx.status_file == status
        argv = children.write_settings(ring_dir, "receiver", rx)
        col = Collector(path)
        proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stderr=subprocess.PIPE)
        try:
            def live():
                s = read_status(status)
                return s if s and len(s["connections"]) == 2 and all(
                    c["state"] == "live" and c["messages"] > 2 for c in s["connections"]) else None
            s = wait_for(live, 20, "both connections live in the status file")
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout(20))
            err = proc.stderr.read().decode()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        msgs = col.stop()
    assert rc == 0, err
    assert {c["name"] for c in s["connections"]} == {"kraken-0", "kraken-1"}
    assert sorted(c["subscribed"] for c in s["connections"]) == [1, 2]
    assert all(c["bytes"] > 0 and c["last_data_ns"] and c["reconnects"] == {}
               for c in s["connections"])
    assert s["pid"] == proc.pid and s["role"] == "receiver"
    final = read_status(status)
    assert final["stopping"] and {c["state"] for c in final["connections"]} == {"closed"}
    start = _ctl(msgs, "shard_start")[0]
    assert (start["shard_id"], start["cores"]) == (3, [online_cores()[-1]])
