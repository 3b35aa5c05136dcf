"""Scripted behaviour shared by the venues: 429 on connect, disconnects,
malformed frames, large frames, blast mode, determinism from the seed, the
records, and the subprocess runner."""
from __future__ import annotations

import asyncio
import os

import orjson
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from capture.simulator import (Blast, Scenario, Simulator, SimulatorProcess, blast_marker,
                               frames_digest, read_frames)
from capture.simulator.blast import ws_frame
from capture.simulator.kraken import book_checksum
from simhelp import client, recv, recv_json, run

KRAKEN_BOOK = orjson.dumps({"method": "subscribe", "req_id": 1,
                            "params": {"channel": "book", "symbol": ["BTC/USD", "ETH/USD"]}})
POLY = lambda ids: orjson.dumps({"assets_ids": ids, "type": "market"})  # noqa: E731


def test_429_for_first_attempts_then_success():
    async def body():
        async with Simulator(["polymarket"], Scenario(reject_connects=2, rate=0)) as sim:
            for _ in range(2):
                with pytest.raises(InvalidStatus) as ei:
                    async with client(sim.url("polymarket")):
                        pass
                assert ei.value.response.status_code == 429
            async with client(sim.url("polymarket")) as ws:
                await ws.send("PING")
                assert await recv(ws) == "PONG"
            vs = sim.server("polymarket")
            assert (vs.attempts, vs.rejected_429, len(sim.connections("polymarket"))) == (3, 2, 1)
    run(body)


@pytest.mark.parametrize("mode,code", [("close", 1001), ("drop", 1006)])
def test_disconnect_after_n_messages_first_connection_only(mode, code):
    async def body():
        sc = Scenario(rate=float("inf"), disconnect_after=30, disconnect_mode=mode,
                      disconnect_connections=1, max_messages=50)
        async with Simulator(["kraken"], sc) as sim:
            got = []
            async with client(sim.url("kraken")) as ws:
                await ws.send(KRAKEN_BOOK)
                with pytest.raises(ConnectionClosed) as ei:
                    while True:
                        got.append((await recv(ws)).encode())
                assert (ei.value.rcvd.code if ei.value.rcvd else 1006) == code
            rec = sim.connections("kraken")[0]
            await sim.wait_for(lambda: rec.closed)
            # Everything recorded arrived, in order, byte for byte.
            assert got == rec.sent and rec.data_count == 30
            assert frames_digest(got) == rec.digest()
            # The second connection is not disconnected: it reaches max_messages.
            async with client(sim.url("kraken")) as ws:
                await ws.send(KRAKEN_BOOK)
                n = 0
                while n < 50:
                    n += "book" in (await recv_json(ws)).get("channel", "")
    run(body)


def test_malformed_frames_and_injected_disconnect():
    async def body():
        sc = Scenario(rate=float("inf"), malformed_every=10, max_messages=40)
        async with Simulator(["kraken_futures"], sc) as sim:
            async with client(sim.url("kraken_futures")) as ws:
                await ws.send(b'{"event":"subscribe","feed":"ticker","product_ids":["PF_ETHUSD"]}')
                good, bad = [], []
                while len(good) < 41 or len(bad) < 4:  # the ack, 40 tickers, 4 bad
                    f = await recv(ws)
                    try:
                        good.append(orjson.loads(f))
                    except orjson.JSONDecodeError:
                        bad.append(f)
                assert len(bad) == 4
                assert bad[0].startswith("<html>") and bad[1].startswith('{"time"')
                assert sim.inject("kraken_futures", "disconnect") == 1
                with pytest.raises(ConnectionClosed):
                    await recv(ws)
    run(body)


def test_large_frame_three_mib_kraken():
    async def body():
        size = 3 * 1024 * 1024
        sc = Scenario(rate=float("inf"), large_every=3, large_size=size, max_messages=3)
        async with Simulator(["kraken"], sc) as sim:
            async with client(sim.url("kraken"), max_size=16 * 1024 * 1024) as ws:
                await ws.send(b'{"method":"subscribe","params":{"channel":"trade","symbol":["SOL/USD"]}}')
                big = None
                while big is None:
                    f = await recv(ws)
                    if len(f) > size:
                        big = f
                m = orjson.loads(big)
                ids = [t["trade_id"] for t in m["data"]]
                assert ids == list(range(ids[0], ids[0] + len(ids)))
                assert big.encode() in sim.connections("kraken")[0].sent
    run(body)


def test_blast_counts_marker_and_digest():
    async def body():
        # Heartbeats far apart: the digest below covers frames up to the marker.
        sc = Scenario(blast=Blast(frames=10_000, size=512, distinct=1000), record="digest",
                      heartbeat_interval=3600)
        async with Simulator(["kraken", "polymarket"], sc) as sim:
            async with client(sim.url("kraken")) as ws:
                await ws.send(KRAKEN_BOOK)
                frames = []
                while True:
                    f = (await recv(ws)).encode()
                    if f == blast_marker(10_000):
                        break
                    frames.append(f)
                blast = [f for f in frames if f.startswith(b'{"channel":"trade"')]
                assert len(blast) == 10_000 and {len(f) for f in blast} == {512}
                assert len(set(blast)) == 1000
                rec = sim.connections("kraken")[0]
                assert rec.digest() == frames_digest(frames + [blast_marker(10_000)])
            async with client(sim.url("polymarket")) as ws:
                await ws.send(POLY(sim.symbols("polymarket")[:2]))
                n = 0
                while (await recv(ws)).encode() != blast_marker(10_000):
                    n += 1
                assert n == 10_001  # the initial dump, then the blast
    run(body)


def test_blast_size_below_venue_minimum_is_a_config_error():
    from common.errors import ConfigError
    Simulator(["kraken"], Scenario(blast=Blast(frames=1, size=256)))
    with pytest.raises(ConfigError, match="polymarket"):
        Simulator(["polymarket"], Scenario(blast=Blast(frames=1, size=256)))


def test_ws_frame_header_lengths():
    for n in (0, 125, 126, 65535, 65536):
        f = ws_frame(b"x" * n)
        assert f[0] == 0x81 and f.endswith(b"x" * n)
        assert len(f) - n == (2 if n < 126 else 4 if n < 65536 else 10)


def _data_frames(seed: int, n: int = 200) -> list[bytes]:
    async def body():
        sc = Scenario(seed=seed, rate=float("inf"), max_messages=n)
        async with Simulator(["kraken"], sc) as sim:
            async with client(sim.url("kraken")) as ws:
                await ws.send(KRAKEN_BOOK)
                while sim.connections("kraken")[0].data_count < n:
                    await recv(ws)
            rec = sim.connections("kraken")[0]
            return [f for f in rec.sent if f.startswith(b'{"channel":"book"')]
    return run(body)


def test_data_is_deterministic_from_seed():
    a, b, c = _data_frames(7), _data_frames(7), _data_frames(8)
    assert len(a) == 200 and a == b and a != c


def test_checksum_known_vector():
    # Trailing zeros are kept, leading zeros stripped: "0.05000" -> "5000".
    asks = [("0.05005", "0.00000500"), ("0.05010", "1.50000000")]
    bids = [("0.05000", "12.00000000")]
    import zlib
    assert book_checksum(asks, bids) == zlib.crc32(b"5005500" + b"5010150000000"
                                                    + b"50001200000000")


def test_subprocess_cli_summary_and_frames_dir(tmp_path):
    sc = Scenario(rate=float("inf"), max_messages=25)
    key_path = str(tmp_path / "kalshi.pem")
    with SimulatorProcess(["kraken", "kalshi"], sc, frames_dir=str(tmp_path),
                          kalshi_private_key_path=key_path) as sp:
        assert sp.url("kraken").startswith("ws://127.0.0.1:")
        assert os.stat(key_path).st_mode & 0o077 == 0

        async def body():
            got = []
            async with client(sp.url("kraken")) as ws:
                await ws.send(KRAKEN_BOOK)
                while sum(f.startswith(b'{"channel":"book"') for f in got) < 25:
                    got.append((await recv(ws)).encode())
            return got
        got = run(body)
        summary = sp.stop()
    (conn,) = [s for s in summary if s["venue"] == "kraken"]
    assert conn["data_count"] == 25
    sent = read_frames(str(tmp_path / "kraken-0.frames"))
    assert sent[:len(got)] == got and frames_digest(sent) == conn["digest"]


def test_thread_runner_inject_from_another_thread():
    from capture.simulator import SimulatorThread
    with SimulatorThread(["kraken"], Scenario(rate=0)) as st:
        async def body():
            async with client(st.url("kraken")) as ws:
                await ws.send(b'{"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD"]}}')
                m = await recv_json(ws)
                while m.get("method") != "subscribe":
                    m = await recv_json(ws)
                # Inject from this (non-simulator) thread: 5 data messages.
                assert await asyncio.to_thread(st.inject, "kraken", "data", count=5) == 1
                n = 0
                while n < 5:
                    n += (await recv_json(ws)).get("channel") == "trade"
        run(body)
        assert st.sim.connections("kraken")[0].data_count == 5
