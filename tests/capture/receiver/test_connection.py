"""The connection lifecycle: the state table itself (no I/O), then against
the simulator: reconnect with backoff and jitter, the silence watchdog, the
keepalive timeout, and one failing connection leaving the others alone."""
from __future__ import annotations

import asyncio
import os
import random
import threading

import orjson
import pytest


import ring  # noqa: E402
from capture.receiver.connection import Connection  # noqa: E402
from capture.receiver.lifecycle import (RECORD_KIND, TRANSITIONS, ConnectionStateError, Event, State, Timing)  # noqa: E402
from capture.receiver.process import ReceiverConfig  # noqa: E402
from capture.simulator import Scenario, SimulatorThread  # noqa: E402
from capture.venues import KrakenSpot, Polymarket  # noqa: E402
from receiver_helpers import control_records  # noqa: E402
from receiver_helpers import (CONTROL, DATA, FAST, Collector, ReceiverThread,  # noqa: E402
                              assert_exactly_sent, cleanup, make_ring_dir, sessions)
from common.errors import CaptureError, ConfigError  # noqa: E402
from timing import wait_for  # noqa: E402

TRANSPORTS = ["picows", "websockets"]


# --------------------------------------------------------------------------
# The table, without I/O
# --------------------------------------------------------------------------

def _conn(ring_path, venue=KrakenSpot, **kw) -> tuple[Connection, ring.Producer]:
    p = ring.Producer(ring_path)
    return Connection(p, 3, "kraken-3", venue, "ws://127.0.0.1:9/v2", ["BTC/USD"], **kw), p


def test_every_state_reachable_and_stop_allowed_everywhere():
    reachable = {State.IDLE}
    frontier = [State.IDLE]
    while frontier:
        s = frontier.pop()
        for (a, _e), b in TRANSITIONS.items():
            if a is s and b not in reachable:
                reachable.add(b)
                frontier.append(b)
    assert reachable == set(State)
    for s in State:
        if s is not State.CLOSED:
            assert TRANSITIONS[(s, Event.STOP)] is State.CLOSED
    assert not [k for k in TRANSITIONS if k[0] is State.CLOSED]  # closed is final
    assert set(RECORD_KIND) == set(Event)


def test_transitions_write_records_and_refuse_bad_events(ring_path):
    col = Collector(ring_path)
    c, p = _conn(ring_path)
    path = [(Event.START, State.CONNECTING), (Event.OPENED, State.SUBSCRIBING),
            (Event.SUBSCRIBED, State.LIVE), (Event.SILENCE, State.STALE),
            (Event.LOST, State.BACKING_OFF), (Event.RETRY, State.CONNECTING),
            (Event.CONNECT_FAILED, State.BACKING_OFF), (Event.STOP, State.CLOSED)]
    for ev, want in path:
        assert c._fire(ev) is want
    with pytest.raises(ConnectionStateError) as ei:
        c._fire(Event.OPENED)
    assert isinstance(ei.value, CaptureError)
    assert (ei.value.state, ei.value.event) == (State.CLOSED, Event.OPENED)
    p.close()
    recs = [orjson.loads(m.payload) for m in col.stop() if m.type == CONTROL]
    assert [r["kind"] for r in recs] == [RECORD_KIND[e] for e, _ in path]
    assert all(r["conn_name"] == "kraken-3" for r in recs)
    assert [r["state"] for r in recs] == [s.value for _, s in path]
    assert [m.conn for m in col.msgs] == [3] * len(path)


def test_backoff_is_capped_exponential_with_full_jitter():
    t = Timing(backoff_base=0.5, backoff_cap=8.0)
    rng = random.Random(5)
    for failures in range(12):
        cap = min(8.0, 0.5 * 2 ** failures)
        delays = [t.backoff(failures, rng) for _ in range(200)]
        assert all(c == cap and 0 <= d <= cap for d, c in delays)
        assert len({d for d, _ in delays}) > 100   # jittered, not a fixed step
    with pytest.raises(ConfigError):
        Timing(backoff_base=2, backoff_cap=1)
    with pytest.raises(ConfigError):
        Timing(silence_timeout=-1)


def test_hot_path_classifies_small_frames_only(ring_path):
    """Big frames are written and counted as data without classification;
    small ones (PONG, heartbeats, acks) are classified; garbage is counted."""
    c, p = _conn(ring_path, venue=Polymarket)
    calls = []
    real = Polymarket.classify
    c.venue = type("V", (), {"classify": staticmethod(lambda raw: calls.append(raw) or real(raw)),
                             "name": "polymarket"})
    c.state = State.LIVE
    c._set_peek()
    big = b'{"event_type":"book","market":"0x1",' + b'"x":"' + b"y" * 500 + b'"}'
    c._on_message(big, 1, 0)
    assert calls == [] and c.last_data_ns == 1
    c._on_message(b"PONG", 2, 0)
    assert calls == [b"PONG"] and c.last_data_ns == 1
    c._on_message(b"\xff\xfe\x00 not json", 3, 0)
    c._on_message(memoryview(b"{" + b"z" * 600), 4, 0)  # long, truncated JSON
    c._on_message(b"  " + big + b"\n", 5, 0)             # whitespace around is fine
    assert c.malformed == 2 and c.frames == 5
    p.close()


def _read_all(rd):
    out = []
    while len(b := rd.read()):
        out.extend((f.type, f.flags, f.conn, f.ts, bytes(f.payload)) for f in b)
        rd.commit(b)
    return out


@pytest.fixture
def small_ring():
    d = make_ring_dir()
    p = os.path.join(d, "small.ring")
    ring.create(p, 1 << 16).close()     # 64 KiB: fills fast, 8 KiB fragment limit
    yield p
    cleanup(d)


def test_hot_path_writes_bytes_and_buffers_alike(small_ring):
    """bytes take the C write directly, views and bytearrays Producer.write:
    the frames in the ring are the same either way."""
    c, p = _conn(small_ring)
    c.state = State.LIVE
    c._set_peek()
    body = b'{"channel":"trade","data":[' + b"1" * 200 + b"]}"
    with ring.Reader(small_ring, "t", tethered=True) as rd:
        c._on_message(body, 11, 0)
        c._on_message(memoryview(body), 12, 0)
        c._on_message(bytearray(body), 13, int(ring.FrameFlags.BINARY))
        big = b'{"x":"' + b"y" * 20_000 + b'"}'   # above the fragment limit: a chain
        c._on_message(big, 14, 0)
        got = _read_all(rd)
    whole = [g for g in got if g[0] == DATA]
    assert whole == [(DATA, 0, 3, 11, body), (DATA, 0, 3, 12, body),
                     (DATA, int(ring.FrameFlags.BINARY), 3, 13, body)]
    assert b"".join(g[4] for g in got[3:]) == big and len(got) > 4
    assert (c.frames, c.nbytes, c.refused, c.malformed) == (4, 3 * len(body) + len(big), 0, 0)
    p.close()


def test_hot_path_full_ring_gap_record_precedes_later_frames(small_ring):
    """A refused frame is counted; once the ring has room again, the gap
    record comes before the next frame - of this connection or another one
    sharing the producer."""
    p = ring.Producer(small_ring)
    a = Connection(p, 1, "kraken-1", KrakenSpot, "ws://127.0.0.1:9/v2", ["BTC/USD"])
    b = Connection(p, 2, "kraken-2", KrakenSpot, "ws://127.0.0.1:9/v2", ["ETH/USD"])
    for c in (a, b):
        c.state = State.LIVE
        c._set_peek()
    body = b'{"channel":"trade","data":[' + b"1" * 1000 + b"]}"
    with ring.Reader(small_ring, "t", tethered=True) as rd:
        n = 0
        while not a.refused:
            n += 1
            a._on_message(body, n, 0)
        a._on_message(body, n + 1, 0)            # still full: counted as well
        assert a.refused == 2 and a.frames == n + 1 and a.state is State.LIVE
        before = _read_all(rd)                   # room again
        b._on_message(b'{"after":1}', 10_000, 0)
        a._on_message(b'{"after":2}', 10_001, 0)
        got = _read_all(rd)
    assert [g[0] for g in got] == [CONTROL, DATA, DATA]
    assert orjson.loads(got[0][4])["kind"] == "drop"
    drops = [orjson.loads(g[4]) for g in before + got if g[0] == CONTROL]
    assert sum(d["count"] for d in drops) == a.refused
    assert [(g[2], g[4]) for g in got[1:]] == [(2, b'{"after":1}'), (1, b'{"after":2}')]
    assert b.refused == 0
    p.close()


# --------------------------------------------------------------------------
# Against the simulator
# --------------------------------------------------------------------------

def _ctl(msgs, conn=None, kind=None):
    return control_records(msgs, kind=kind, conn=conn)


@pytest.mark.parametrize("transport,mode,code", [("picows", "drop", 1006),
                                                 ("websockets", "close", 1001),
                                                 ("picows", "close", 1001)])
def test_reconnect_with_backoff_and_jitter_under_repeated_disconnects(ring_path, transport,
                                                                      mode, code):
    # The first 4 accepted connections are cut after 15 data messages, with a
    # close frame (1001 going away) or a bare TCP close (the client sees 1006).
    sc = Scenario(rate=600, max_messages=40, heartbeat_interval=3600, disconnect_after=15,
                  disconnect_connections=4, disconnect_mode=mode, seed=11)
    timing = Timing(**{**FAST.__dict__, "backoff_base": 0.01, "backoff_cap": 0.08})
    with SimulatorThread(["kraken"], sc) as st:
        cfg = ReceiverConfig(ring=ring_path, venue="kraken", url=st.url("kraken"),
                             symbols=["BTC/USD"], channels=["trade"], transport=transport,
                             timing=timing, seed=4)
        col = Collector(ring_path)
        rt = ReceiverThread(cfg)
        try:
            wait_for(lambda: len(st.sim.connections("kraken")) >= 5
                     and st.sim.connections("kraken")[-1].data_count >= 40, 20,
                     "five connections, the last one complete")
            recs = st.sim.connections("kraken")
            wait_for(lambda: sum(1 for m in col.snapshot() if m.type == DATA)
                     == sum(r.count for r in recs), 10, "every frame in the ring")
        finally:
            rt.stop()
            msgs = col.stop()
        records = st.sim.connections("kraken")
    assert_exactly_sent(msgs, records, [0])
    recon = _ctl(msgs, 0, "reconnect")
    assert [r["attempt"] for r in recon] == [2, 3, 4, 5]
    # capped exponential: 0.01, 0.02, 0.04, 0.08, then the cap; jitter below it
    assert [r["cap"] for r in recon] == [0.01, 0.02, 0.04, 0.08]
    assert all(0 <= r["delay"] <= r["cap"] for r in recon)
    closed = _ctl(msgs, 0, "closed")
    assert [(c["code"], c["by"]) for c in closed[:4]] == [(code, "server")] * 4
    assert closed[-1]["by"] == "client"
    opened = _ctl(msgs, 0, "opened")
    assert [o["attempt"] for o in opened] == [1, 2, 3, 4, 5]
    # the process went on: one connection only, the shard never restarted
    assert len(_ctl(msgs, kind="shard_start")) == 1


def test_rate_limited_subscribe_is_retried_on_the_live_connection(ring_path):
    """Kraken refuses the third subscribe of a burst ("Exceeded msg rate"):
    the connection goes live with what it has, sends the refused one again
    after the retry delay, and ends up with every channel - no reconnect."""
    sc = Scenario(rate=200, heartbeat_interval=3600, subscribe_burst=2, subscribe_refill=20.0, seed=3)
    timing = Timing(**{**FAST.__dict__, "subscribe_retry": 0.2, "subscribe_retry_cap": 1.0})
    with SimulatorThread(["kraken"], sc) as st:
        cfg = ReceiverConfig(ring=ring_path, venue="kraken", url=st.url("kraken"),
                             symbols=["BTC/USD"], channels=["trade", "ticker", "book"],
                             transport="picows", timing=timing, seed=2)
        col = Collector(ring_path)
        rt = ReceiverThread(cfg)
        try:
            wait_for(lambda: len(_ctl(col.snapshot(), 0, "subscribed")) == 3, 20,
                     "all three channels subscribed")
        finally:
            rt.stop()
            msgs = col.stop()
        assert len(st.sim.connections("kraken")) == 1
    failed = _ctl(msgs, 0, "subscribe_failed")
    assert len(failed) >= 1 and all("Exceeded msg rate" in f["error"] for f in failed)
    assert all(f["retry_in_s"] > 0 for f in failed)
    retries = [c for c in _ctl(msgs, 0, "subscribe_sent") if c["reason"] == "rate_limit_retry"]
    assert [r["channel"] for r in retries][-1] == failed[-1]["channel"]
    assert {c["channel"] for c in _ctl(msgs, 0, "subscribed")} == {"trade", "ticker", "book"}
    assert _ctl(msgs, 0, "live")[0]["failed"] == len(failed[0]["symbols"])   # live before the retry
    assert not _ctl(msgs, 0, "reconnect")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_silence_watchdog_replaces_a_silent_but_ponging_connection(ring_path, transport):
    sc = Scenario(rate=300, silence_after=20, silence_connections=1, max_messages=60, seed=5)
    timing = Timing(**{**FAST.__dict__, "ping_interval": 0.05, "pong_timeout": 2.0,
                       "silence_timeout": 0.4})
    with SimulatorThread(["polymarket"], sc) as st:
        toks = st.sim.symbols("polymarket")[:2]
        cfg = ReceiverConfig(ring=ring_path, venue="polymarket", url=st.url("polymarket"),
                             symbols=toks, transport=transport, timing=timing, seed=9)
        col = Collector(ring_path)
        rt = ReceiverThread(cfg)
        try:
            col.wait_control("silence_timeout", seconds=10)
            wait_for(lambda: len(st.sim.connections("polymarket")) >= 2
                     and st.sim.connections("polymarket")[1].data_count >= 60, 10,
                     "the replacement connection's data")
            first = st.sim.connections("polymarket")[0]
            wait_for(lambda: first.closed, 5, "the silent connection closed")
        finally:
            rt.stop()
            msgs = col.stop()
    s = sessions(msgs, 0)
    assert len(s) >= 2
    first = s[0]
    data_first = [f for f in first if f != b"PONG"]
    assert len(data_first) == 20   # the initial dump + 19 messages, then silence
    # while silent it kept answering PING with PONG: the socket was "alive"
    last_data = max(i for i, f in enumerate(first) if f != b"PONG")
    assert first[last_data + 1:] and set(first[last_data + 1:]) == {b"PONG"}
    sil = _ctl(msgs, 0, "silence_timeout")[0]
    assert sil["silent_s"] >= 0.4 and sil["state"] == "stale"
    kinds = [c["kind"] for c in _ctl(msgs, 0)]
    i = kinds.index("silence_timeout")
    assert kinds[i:i + 4] == ["silence_timeout", "closed", "reconnect", "connecting"]
    assert _ctl(msgs, 0, "closed")[0]["by"] == "client"
    assert not _ctl(msgs, 0, "keepalive_timeout")


def test_keepalive_timeout_when_pings_go_unanswered(ring_path):
    """A server that accepts and then never answers PING: the connection is
    declared stale after pong_timeout and replaced."""
    from websockets.asyncio.server import serve
    ready = threading.Event()
    state = {}

    async def handler(ws):
        state["n"] = state.get("n", 0) + 1
        async for _ in ws:
            pass   # swallow PING and the subscription, answer nothing

    def server():
        async def main():
            async with serve(handler, "127.0.0.1", 0) as srv:
                state["port"] = srv.sockets[0].getsockname()[1]
                state["loop"] = asyncio.get_running_loop()
                state["stop"] = asyncio.Event()
                ready.set()
                await state["stop"].wait()
        asyncio.run(main())
    th = threading.Thread(target=server, daemon=True)
    th.start()
    ready.wait(10)
    timing = Timing(**{**FAST.__dict__, "ping_interval": 0.05, "pong_timeout": 0.2})
    cfg = ReceiverConfig(ring=ring_path, venue="polymarket",
                         url=f"ws://127.0.0.1:{state['port']}/ws/market", symbols=["1", "2"],
                         transport="picows", timing=timing, seed=1)
    col = Collector(ring_path)
    rt = ReceiverThread(cfg)
    try:
        col.wait_control("keepalive_timeout", n=2, seconds=10)
    finally:
        rt.stop()
        msgs = col.stop()
        state["loop"].call_soon_threadsafe(state["stop"].set)
        th.join(10)
    kt = _ctl(msgs, 0, "keepalive_timeout")[0]
    assert kt["waited_s"] >= 0.2
    kinds = [c["kind"] for c in _ctl(msgs, 0)]
    i = kinds.index("keepalive_timeout")
    assert kinds[i:i + 3] == ["keepalive_timeout", "closed", "reconnect"]
    assert state["n"] >= 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_one_failing_connection_does_not_disturb_the_others(ring_path, transport):
    sc = Scenario(rate=300, max_messages=150, heartbeat_interval=3600, seed=21)
    with SimulatorThread(["kraken"], sc) as st:
        syms = st.sim.symbols("kraken")
        cfg = ReceiverConfig(ring=ring_path, venue="kraken", url=st.url("kraken"),
                             connections=[[syms[0]], [syms[1]], [syms[2]]], channels=["trade"],
                             transport=transport, timing=FAST, seed=3)
        col = Collector(ring_path)
        rt = ReceiverThread(cfg)

        def of(sym):   # the simulator's records of the connections subscribing sym
            return [r for r in st.sim.connections("kraken") if r.received
                    and sym in orjson.loads(r.received[0])["params"]["symbol"]]

        def in_ring(conn):
            return sum(1 for m in col.snapshot() if m.type == DATA and m.conn == conn)
        try:
            wait_for(lambda: len(rt.rx.connections) == 3 and all(
                c.state is State.LIVE for c in rt.rx.connections.values()), 10,
                "three live connections")
            victim = rt.rx.connections["kraken-1"]
            # kill connection 1's socket three times, abruptly, while data flows
            for k in range(3):
                wait_for(lambda: victim.state is State.LIVE, 10, "victim live again")
                rt.call(lambda: victim.transport.abort())
                col.wait_control("reconnect", n=k + 1, seconds=10, conn_name="kraken-1")
            wait_for(lambda: victim.state is State.LIVE, 10, "victim live again")
            wait_for(lambda: all(len(of(s)) >= 1 and of(s)[-1].data_count >= 150 for s in syms[:3])
                     and in_ring(0) == of(syms[0])[0].count
                     and in_ring(2) == of(syms[2])[0].count
                     and sessions(col.snapshot(), 1)[-1:] and
                     len(sessions(col.snapshot(), 1)[-1]) == of(syms[1])[-1].count,
                     20, "all data")
        finally:
            rt.stop()
            msgs = col.stop()
        untouched = of(syms[0]) + of(syms[2])
        victim_recs = of(syms[1])
    # the others: exactly what was sent, one session each, no reconnect
    assert_exactly_sent(msgs, untouched, [0, 2])
    for conn in (0, 2):
        assert len(sessions(msgs, conn)) == 1
        assert not _ctl(msgs, conn, "reconnect")
        assert [c["by"] for c in _ctl(msgs, conn, "closed")] == ["client"]
    # the victim: 4 sessions; each is what its server connection sent, up to
    # the moment the socket was cut (frames in flight then are gone)
    vs = sessions(msgs, 1)
    assert len(vs) == 4 and len(victim_recs) == 4
    for got, rec in zip(vs, victim_recs):
        assert got == rec.sent[:len(got)] and got
    assert vs[-1] == victim_recs[-1].sent
    assert len(_ctl(msgs, 1, "reconnect")) == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_kraken_app_ping_is_answered_and_keeps_the_connection(ring_path, transport):
    sc = Scenario(rate=50, heartbeat_interval=3600, seed=2)
    timing = Timing(**{**FAST.__dict__, "ping_interval": 0.05, "pong_timeout": 1.0})
    with SimulatorThread(["kraken"], sc) as st:
        cfg = ReceiverConfig(ring=ring_path, venue="kraken", url=st.url("kraken"),
                             symbols=["BTC/USD"], channels=["trade"], transport=transport,
                             timing=timing, seed=1)
        col = Collector(ring_path)
        rt = ReceiverThread(cfg)

        def pings():
            recs = st.sim.connections("kraken")
            return recs and [m for m in recs[0].received if '"ping"' in m]
        try:
            wait_for(lambda: len(pings() or []) >= 4, 10, "four app pings")
        finally:
            rt.stop()
            msgs = col.stop()
    assert all(orjson.loads(m)["method"] == "ping" for m in pings())
    pongs = [m for m in msgs if m.type == DATA and b'"method":"pong"' in m.payload]
    assert len(pongs) >= 3
    assert not _ctl(msgs, 0, "keepalive_timeout") and not _ctl(msgs, 0, "reconnect")


def test_a_bug_inside_an_attempt_costs_one_reconnect(ring_path, monkeypatch):
    from capture.venues.kraken import subscriber as cmod
    calls = []
    real = cmod.KrakenSubscriber.subscribe

    def flaky(self, members):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("glue bug")
        return real(self, members)
    monkeypatch.setattr(cmod.KrakenSubscriber, "subscribe", flaky)
    sc = Scenario(rate=50, heartbeat_interval=3600, seed=2)
    with SimulatorThread(["kraken"], sc) as st:
        cfg = ReceiverConfig(ring=ring_path, venue="kraken", url=st.url("kraken"),
                             symbols=["BTC/USD"], channels=["trade"], transport="picows",
                             timing=FAST, seed=1)
        col = Collector(ring_path)
        rt = ReceiverThread(cfg)
        try:
            col.wait_control("live", seconds=10)
        finally:
            rt.stop()
            msgs = col.stop()
    kinds = [c["kind"] for c in _ctl(msgs, 0)]
    assert kinds[:8] == ["connecting", "opened", "receiver_error", "closed", "reconnect",
                         "connecting", "opened", "subscribe_sent"]
    err = _ctl(msgs, 0, "receiver_error")[0]
    closed = _ctl(msgs, 0, "closed")[0]
    assert "glue bug" in err["error"] and (closed["code"], closed["by"]) == (1011, "error")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_http_429_at_connect_backs_off_and_retries(ring_path, transport):
    sc = Scenario(rate=50, heartbeat_interval=3600, reject_connects=3, seed=2)
    with SimulatorThread(["polymarket"], sc) as st:
        cfg = ReceiverConfig(ring=ring_path, venue="polymarket", url=st.url("polymarket"),
                             symbols=st.sim.symbols("polymarket")[:2], transport=transport,
                             timing=FAST, seed=1)
        col = Collector(ring_path)
        rt = ReceiverThread(cfg)
        try:
            col.wait_control("live", seconds=10)
        finally:
            rt.stop()
            msgs = col.stop()
        assert st.sim.server("polymarket").rejected_429 == 3
    kinds = [c["kind"] for c in _ctl(msgs, 0)]
    assert kinds[:11] == ["connecting", "connect_failed", "reconnect"] * 3 + ["connecting", "opened"]
    failed = _ctl(msgs, 0, "connect_failed")
    assert [f["status"] for f in failed] == [429] * 3 and "429" in failed[0]["error"]
    assert [r["cap"] for r in _ctl(msgs, 0, "reconnect")] == [0.02, 0.04, 0.08]
