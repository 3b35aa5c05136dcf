"""Kraken spot and Polymarket end to end: simulator -> receiver (both
transports) -> a real ring on /dev/shm.  Every frame the simulator sent is in
the ring exactly once, in order, byte for byte, with the control records at
the right places."""
from __future__ import annotations


import orjson
import pytest


from capture.receiver.process import ReceiverConfig  # noqa: E402
from capture.simulator import Scenario, SimulatorThread  # noqa: E402
from receiver_helpers import (CONTROL, DATA, FAST, Collector, ReceiverThread,  # noqa: E402
                              assert_exactly_sent, sessions)
from timing import wait_for  # noqa: E402

TRANSPORTS = ["picows", "websockets"]


def _run(ring_path, cfg, until):
    """Start collector + receiver, wait for ``until(collector)``, stop."""
    col = Collector(ring_path)
    rt = ReceiverThread(cfg)
    try:
        wait_for(lambda: until(col), 20, "the simulator's frames in the ring")
    finally:
        rt.stop()
        msgs = col.stop()
    return rt, msgs


def _kinds(msgs, conn):
    return [orjson.loads(m.payload)["kind"] if m.type == CONTROL else "DATA"
            for m in msgs if m.conn == conn]


def _total_sent(records):
    return sum(r.count for r in records)


def _data_in_ring(col):
    return sum(1 for m in col.snapshot() if m.type == DATA)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_kraken_spot_end_to_end(ring_path, transport):
    sc = Scenario(rate=400, max_messages=150, heartbeat_interval=3600, seed=7)
    with SimulatorThread(["kraken"], sc) as st:
        syms = st.sim.symbols("kraken")
        groups = [syms[0:2], [syms[2], "NOPE/USD"]]
        cfg = ReceiverConfig(ring=ring_path, venue="kraken", url=st.url("kraken"),
                             connections=groups, transport=transport, timing=FAST,
                             channels=["trade", "ticker", "book"], seed=1)

        def done(col):
            recs = st.sim.connections("kraken")
            return (len(recs) == 2 and all(r.data_count >= 150 for r in recs)
                    and _data_in_ring(col) == _total_sent(recs))
        rt, msgs = _run(ring_path, cfg, done)
        records = st.sim.connections("kraken")

    assert_exactly_sent(msgs, records, [0, 1])
    # shard start first, shard stop last
    ctl = [orjson.loads(m.payload) for m in msgs if m.type == CONTROL]
    assert ctl[0]["kind"] == "shard_start" and ctl[-1]["kind"] == "shard_stop"
    assert ctl[-1]["frames"] == sum(1 for m in msgs if m.type == DATA)
    for conn in (0, 1):
        kinds = _kinds(msgs, conn)
        # lifecycle order around the data
        assert kinds[:2] == ["connecting", "opened"]
        first_sub = kinds.index("subscribe_sent")
        assert kinds[first_sub:first_sub + 3] == ["subscribe_sent"] * 3
        live = kinds.index("live")
        assert kinds[-2:] == ["closed", "stopped"]
        assert "DATA" not in kinds[:2] and kinds.index("live") < len(kinds) - 2
        # every ack is a DATA frame followed (not preceded) by its record
        acks = [i for i, m in enumerate(m for m in msgs if m.conn == conn)
                if m.type == DATA and b'"success":true' in m.payload]
        subscribed = [i for i, k in enumerate(kinds) if k == "subscribed"]
        assert len(acks) == len(subscribed) and all(a < s for a, s in zip(acks, subscribed))
        assert max(subscribed) < live
    c0 = [orjson.loads(m.payload) for m in msgs if m.conn == 0 and m.type == CONTROL]
    assert {(c["channel"], c["symbol"]) for c in c0 if c["kind"] == "subscribed"} == \
        {(ch, s) for ch in ("trade", "ticker", "book") for s in syms[0:2]}
    assert [c for c in c0 if c["kind"] == "live"][0]["acked"] == 6
    c1 = [orjson.loads(m.payload) for m in msgs if m.conn == 1 and m.type == CONTROL]
    failed = [c for c in c1 if c["kind"] == "subscribe_failed"]
    assert {c["channel"] for c in failed} == {"trade", "ticker", "book"}
    assert all(c["symbols"] == ["NOPE/USD"] and "Currency pair not supported" in c["error"]
               for c in failed)
    live1 = [c for c in c1 if c["kind"] == "live"][0]
    assert (live1["acked"], live1["failed"]) == (3, 3)
    closed = [c for c in c1 if c["kind"] == "closed"][0]
    assert (closed["code"], closed["by"]) == (1000, "client")
    # receive stamps: taken at receipt, in order per connection
    for conn in (0, 1):
        ts = [m.ts for m in msgs if m.conn == conn and m.type == DATA]
        assert ts == sorted(ts) and ts[0] > 0
    assert all(m.flags == 0 for m in msgs if m.type == DATA)  # the simulator sends text


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_polymarket_end_to_end(ring_path, transport):
    sc = Scenario(rate=400, max_messages=120, seed=3, large_snapshot_size=64 * 1024)
    with SimulatorThread(["polymarket"], sc) as st:
        toks = st.sim.symbols("polymarket")
        groups = [toks[0:4], toks[4:6]]
        cfg = ReceiverConfig(ring=ring_path, venue="polymarket", url=st.url("polymarket"),
                             connections=groups, transport=transport, timing=FAST, seed=2)

        def done(col):
            recs = st.sim.connections("polymarket")
            return (len(recs) == 2 and all(r.data_count >= 120 for r in recs)
                    and _data_in_ring(col) == _total_sent(recs))
        rt, msgs = _run(ring_path, cfg, done)
        records = st.sim.connections("polymarket")

    assert_exactly_sent(msgs, records, [0, 1])
    for conn, ids in ((0, toks[0:4]), (1, toks[4:6])):
        kinds = _kinds(msgs, conn)
        # no acks on Polymarket: live right after the subscription is sent
        assert kinds[:5] == ["connecting", "opened", "subscribe_sent", "live", "DATA"]
        sent = [orjson.loads(m.payload) for m in msgs if m.conn == conn and m.type == CONTROL
                and orjson.loads(m.payload)["kind"] == "subscribe_sent"][0]
        assert sent["symbols"] == ids
        # the initial dump is one JSON array frame, captured as sent
        first = sessions(msgs, conn)[0][0]
        assert first.startswith(b"[") and len(first) >= 64 * 1024
    # what the receiver sent: the documented initial message
    for r in records:
        assert orjson.loads(r.received[0])["type"] == "market"


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("venue", ["kraken_futures", "kalshi"])
def test_futures_and_kalshi_smoke(ring_path, tmp_path, venue, transport):
    """The other two venues: acks per product / per channel, Futures protocol
    pings answered by the venue, Kalshi's signed handshake and its server
    pings answered by us."""
    from cryptography.hazmat.primitives import serialization
    from capture.receiver.lifecycle import Timing
    sc = Scenario(rate=300, max_messages=60, heartbeat_interval=3600, kalshi_ping_interval=0.05,
                  seed=5)
    with SimulatorThread([venue], sc) as st:
        kw = {}
        if venue == "kalshi":
            key = tmp_path / "kalshi.pem"
            key.write_bytes(st.sim.kalshi_private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
            key.chmod(0o600)
            kw = dict(kalshi_key_id="key-id", kalshi_key_file=str(key))
        timing = Timing(**{**FAST.__dict__, "ping_interval": 0.05 if venue == "kraken_futures" else 0})
        cfg = ReceiverConfig(ring=ring_path, venue=venue, url=st.url(venue),
                             symbols=st.sim.symbols(venue)[:2], transport=transport,
                             timing=timing, seed=1, **kw)

        def done(col):
            recs = st.sim.connections(venue)
            return (recs and recs[0].data_count >= 60 and _data_in_ring(col) == _total_sent(recs))
        rt, msgs = _run(ring_path, cfg, done)
        records = st.sim.connections(venue)
        assert st.sim.server(venue).rejected_401 == 0
    assert_exactly_sent(msgs, records, [0])
    ctl = [orjson.loads(m.payload) for m in msgs if m.type == CONTROL and m.conn == 0]
    live = [c for c in ctl if c["kind"] == "live"]
    assert len(live) == 1 and live[0]["failed"] == live[0]["timed_out"] == 0
    # Kalshi: orderbook_delta is one sid per market (seq is per sid), so 2 + trade + ticker
    assert live[0]["acked"] == (6 if venue == "kraken_futures" else 4)
    assert not [c for c in ctl if c["kind"] in ("keepalive_timeout", "reconnect")]
