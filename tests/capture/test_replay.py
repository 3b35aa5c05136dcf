"""``capture replay``: WebSocket feeds byte for byte against the segment files, filters,
control records, pacing on a virtual clock, the command, and bad input.

The client is python-websockets, an implementation independent of the server's
(picows); the expected messages come from ``flusher.segments.read.read``."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys

import pytest
import websockets

from capture import cli
from capture.replay import Replay, Selection, parse_speed
from common.errors import NoData, SegmentError
from dataout_helpers import SHARD_CONN, kraken_recording
from flusher.segments.read import read
from ring.frame import FrameFlags, FrameType
from timing import timeout

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _expected(data: str, conn: int | None = None, control: bool = False) -> list[bytes | str]:
    """What a feed must carry: text as str, binary as bytes, in recorded order."""
    out: list[bytes | str] = []
    for f in read(data):
        if f.type == FrameType.CONTROL:
            if control and (conn is None or f.conn in (conn, SHARD_CONN)):
                out.append(f.payload.decode())
            continue
        if conn is not None and f.conn != conn:
            continue
        out.append(f.payload if f.flags & FrameFlags.BINARY else f.payload.decode())
    return out


async def _feed(port: int, path: str) -> list[bytes | str]:
    async with websockets.connect(f"ws://127.0.0.1:{port}{path}", max_size=None) as ws:
        got = [m async for m in ws]
        assert ws.close_code == 1000 and ws.close_reason == "end of recording"
    return got


async def _http_get(port: int, path: str) -> tuple[int, bytes]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await r.read()
    w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _run(coro, seconds: float = 30):
    return asyncio.run(asyncio.wait_for(coro, timeout(seconds)))


def test_each_connection_byte_for_byte(tmp_path):
    data = str(tmp_path)
    kraken_recording(data, 60)
    replay = Replay(data, "kraken", speed=None)

    async def go():
        server = await replay.serve("127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            status, body = await _http_get(port, "/")
            assert status == 200
            conns = json.loads(body)["connections"]
            assert [(c["path"], c["shard"], c["conn"]) for c in conns] == [
                ("/kraken/0", 2, 0), ("/kraken/1", 2, 1)]
            for c in conns:
                got = await _feed(port, c["path"])
                want = _expected(data, c["conn"])
                assert got == want and any(isinstance(x, bytes) for x in want)
            assert await _feed(port, "/kraken/2.1") == _expected(data, 1)   # the long form
            assert await _feed(port, "/kraken") == _expected(data)           # every connection
            with pytest.raises(websockets.InvalidStatus):
                await _feed(port, "/kraken/7")
            with pytest.raises(websockets.InvalidStatus):
                await _feed(port, "/binance/0")
        finally:
            server.close()
    _run(go())


def test_channel_and_symbol_filters(tmp_path):
    data = str(tmp_path)
    kraken_recording(data, 60)
    replay = Replay(data, "kraken", speed=None)

    def want(conn=None, channels=None, symbol=None) -> list[str]:
        out = []
        for f in read(data):
            if f.type != FrameType.DATA or f.flags & FrameFlags.BINARY or (
                    conn is not None and f.conn != conn):
                continue
            obj = json.loads(f.payload)
            if "method" in obj or obj.get("channel") not in ("book", "trade"):
                continue              # chatter: not in a channel or symbol feed
            if channels and obj["channel"] not in channels:
                continue
            if symbol and obj["data"][0]["symbol"] != symbol:
                continue
            out.append(f.payload.decode())
        return out

    async def go():
        server = await replay.serve("127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            got = await _feed(port, "/kraken?symbol=ETH%2FUSD")
            assert got == want(symbol="ETH/USD") and got
            got = await _feed(port, "/kraken?channel=trade")
            assert got == want(channels={"trade"}) and got
            got = await _feed(port, "/kraken/0?channel=book,trade&symbol=BTC/USD")
            assert got == want(conn=0, symbol="BTC/USD") and got
            assert await _feed(port, "/kraken?symbol=DOGE/USD") == []
        finally:
            server.close()
    _run(go())


def test_control_records_only_when_asked(tmp_path):
    data = str(tmp_path)
    kraken_recording(data, 20)
    replay = Replay(data, "kraken", speed=None, include_control=True)

    async def go():
        server = await replay.serve("127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            got = await _feed(port, "/kraken/1")
            assert got == _expected(data, 1, control=True)
            kinds = [json.loads(x)["kind"] for x in got if isinstance(x, str) and '"kind"' in x]
            assert kinds == ["shard_start", "opened", "shard_stop"]
        finally:
            server.close()
    _run(go())


def test_pacing_follows_receive_gaps_divided_by_speed(tmp_path):
    """On a virtual clock: each message leaves at (its receive time - the first's) / X."""
    data = str(tmp_path)
    rec = kraken_recording(data, 30)
    replay = Replay(data, "kraken", speed=4.0)
    now = [1000.0]
    sent_at: list[float] = []

    async def fake_sleep(dt: float) -> None:
        now[0] += dt

    replay.clock = lambda: now[0]
    replay.sleep = fake_sleep

    class Transport:
        is_disconnected = False

        def send(self, _type, _payload):
            sent_at.append(now[0])

        def send_close(self, *a):
            pass

        def disconnect(self):
            pass

    class Client:
        writable = asyncio.Event()

    async def go():
        Client.writable.set()
        return await replay.stream(Transport(), Client(), Selection(conn=0, shard=2))
    n = _run(go())
    ts = [v[0] for s, v in rec.messages.items() if v[1] == 1 and v[3] == 0]
    assert n == len(ts)
    assert sent_at == pytest.approx([1000.0 + (t - ts[0]) / 1e9 / 4.0 for t in ts])
    assert parse_speed("max") is None and parse_speed("2.5") == 2.5
    for bad in ("0", "-1", "fast", "inf"):
        with pytest.raises(ValueError):
            parse_speed(bad)


def test_command_serves_until_sigterm(tmp_path):
    data = str(tmp_path / "data")
    kraken_recording(data, 30)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-m", "capture.cli", "replay", data, "--venue", "kraken",
                          "--port", "0", "--speed", "max", "--shard", "2"],
                         stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        line = p.stderr.readline()
        assert "serving ws://127.0.0.1:" in line, line
        url = line.split()[3]
        port = int(url.split(":")[2].split("/")[0])
        assert _run(_feed(port, "/kraken/0")) == _expected(data, 0)
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout(30)) == 0


def test_bad_input_is_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["replay", str(empty), "--venue", "kraken"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no segment files of venue kraken" in err
    data = str(tmp_path / "data")
    kraken_recording(data, 10)
    assert cli.main(["replay", data, "--venue", "kraken", "--start", "2031-01-01"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no messages received in 2031-01-01" in err
    assert cli.main(["replay", data, "--venue", "kraken", "--speed", "0"]) == 2
    assert "--speed must be" in capsys.readouterr().err
    with pytest.raises(NoData):
        Replay(data, "kraken", shard=5)


def test_two_shards_named_shard_dot_conn_and_merged_by_receive_time(tmp_path):
    data = str(tmp_path)
    kraken_recording(data, 20, shard=2)
    kraken_recording(data, 20, shard=5, t0=1_800_000_000 * 10**9 - 3_600 * 10**9 + 3_000_000)
    replay = Replay(data, "kraken", speed=None)
    frames = sorted((f for f in read(data) if f.type == FrameType.DATA),
                    key=lambda f: f.ts_ns)          # read() gives shard 2, then shard 5

    async def go():
        server = await replay.serve("127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            paths = [c["path"] for c in json.loads((await _http_get(port, "/"))[1])["connections"]]
            assert paths == ["/kraken/2.0", "/kraken/2.1", "/kraken/5.0", "/kraken/5.1"]
            with pytest.raises(websockets.InvalidStatus):
                await _feed(port, "/kraken/0")                  # ambiguous with two shards
            got = await _feed(port, "/kraken")
            assert got == [f.payload if f.flags & FrameFlags.BINARY else f.payload.decode()
                           for f in frames]
        finally:
            server.close()
    _run(go())


def test_corrupt_record_ends_the_feed_or_is_skipped(tmp_path):
    from dataout_helpers import corrupt_record
    data = str(tmp_path)
    rec = kraken_recording(data, 40)
    bad = next(s for s in rec.messages if s >= 30 and s + 1 in rec.messages
               and rec.messages[s][1] == 1 and rec.messages[s][3] == 0)
    corrupt_record(rec.paths[1], bad)
    want = [v[4] if v[2] & FrameFlags.BINARY else v[4].decode()
            for s, v in rec.messages.items() if v[1] == 1 and v[3] == 0]
    cut = [v[4] if v[2] & FrameFlags.BINARY else v[4].decode()
           for s, v in rec.messages.items() if v[1] == 1 and v[3] == 0 and s != bad]

    async def feed(replay: Replay) -> tuple[list, int, str]:
        server = await replay.serve("127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with websockets.connect(f"ws://127.0.0.1:{port}/kraken/0", max_size=None) as ws:
                got = [m async for m in ws]
            return got, ws.close_code, ws.close_reason
        finally:
            server.close()

    with pytest.raises(SegmentError) as ei:       # the connection list reads the whole range
        Replay(data, "kraken", speed=None).connections()
    assert ei.value.path == rec.paths[1]
    assert cli.main(["replay", data, "--venue", "kraken", "--port", "0"]) == 1   # before serving
    skipping = Replay(data, "kraken", speed=None, skip_corrupt=True)
    got, code, _ = _run(feed(skipping))
    assert code == 1000 and got == cut and len(cut) == len(want) - 1
    assert [sk.path for sk in skipping.skipped][:1] == [rec.paths[1]]


def test_a_skipped_region_and_a_feed_are_named_log_events(tmp_path, caplog, monkeypatch):
    from dataout_helpers import corrupt_record
    import capture.replay as replay_mod
    from common.log import Throttle
    monkeypatch.setattr(replay_mod, "_throttle", Throttle())   # a burst of its own
    caplog.set_level(logging.INFO, logger="capture.replay")
    data = str(tmp_path)
    rec = kraken_recording(data, 40)
    bad = next(s for s in rec.messages if s >= 30 and s + 1 in rec.messages
               and rec.messages[s][1] == 1 and rec.messages[s][3] == 0)
    corrupt_record(rec.paths[1], bad)
    replay = Replay(data, "kraken", speed=None, skip_corrupt=True)

    def events(name):
        return [r.kv for r in caplog.records if getattr(r, "event", None) == name]

    async def go() -> list:
        server = await replay.serve("127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with websockets.connect(f"ws://127.0.0.1:{port}/kraken/0", max_size=None) as ws:
                msgs = [m async for m in ws]
            # the feed's end is logged by its task's done callback, after the
            # close the client saw (bounded by _run's timeout)
            while not events("feed_done"):
                await asyncio.sleep(0.005)
            return msgs
        finally:
            server.close()
    msgs = _run(go())
    skipped = events("corrupt_skipped")
    assert skipped and skipped[0]["segment"] == rec.paths[1]
    sk = replay.skipped[0]
    assert (skipped[0]["offset"], skipped[0]["reason"], skipped[0]["resume"]) == \
        (sk.offset, sk.reason, sk.resume)
    (done,) = events("feed_done")
    assert done["messages"] == len(msgs) and done["conn"] == 0 and done["feed_shard"] == 2


def test_a_range_that_cannot_be_read_is_a_500_naming_nothing(tmp_path, caplog):
    """Without --skip-corrupt, a corrupt range refuses feeds; the log says why, the
    client gets no file names."""
    from dataout_helpers import corrupt_record
    data = str(tmp_path)
    rec = kraken_recording(data, 40)
    corrupt_record(rec.paths[1], max(rec.messages) - 1)
    replay = Replay(data, "kraken", speed=None)

    async def go():
        server = await replay.serve("127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            status, body = await _http_get(port, "/")
            assert status == 500 and data.encode() not in body
            with pytest.raises(websockets.InvalidStatus) as ei:
                await _feed(port, "/kraken/0")
            assert ei.value.response.status_code == 500
        finally:
            server.close()
    _run(go())
    failed = [r for r in caplog.records if getattr(r, "event", None) == "request_failed"]
    assert [r.kv["path"] for r in failed] == ["/", "/kraken/0"]
    assert all(rec.paths[1] in r.getMessage() for r in failed)   # the log names the file
