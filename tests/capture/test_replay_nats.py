"""``capture replay --to-nats``: recorded by the real flusher while the real publisher
published; the replay puts exactly what the publisher put (subjects, headers with the
original Msg-Ids, bytes), and replaying into the stream that holds the data adds nothing."""
from __future__ import annotations

import asyncio
import json
import os
import signal

from conftest_nats import *  # noqa: F401,F403,E402
from conftest_nats import read_stream, run_async, timeout, wait_for  # noqa: E402

import ring  # noqa: E402
from capture import cli  # noqa: E402
from dataout_helpers import kraken_book, kraken_trade  # noqa: E402
from capture.publish import make_publisher  # noqa: E402
from flusher.publisher.stream import parse_config  # noqa: E402
from flusher.segments.read import read  # noqa: E402
from flusher_helpers import start_flusher  # noqa: E402

STREAM = "PROD_KRAKEN"


def _messages() -> list[tuple[int, bytes, int]]:
    """(type, payload, flags): data of two symbols, chatter, control, binary, and one
    message big enough to travel as fragments through a 1 MiB ring."""
    out = [(int(ring.FrameType.CONTROL), json.dumps({"kind": "shard_start"}).encode(), 0)]
    for i in range(300):
        sym = "BTC/USD" if i % 2 else "ETH/USD"
        t = "2026-12-06T07:00:%02d.%06dZ" % (i // 100, i)
        raw = kraken_trade(sym, i, t) if i % 3 == 0 else kraken_book(sym, i, t)
        out.append((int(ring.FrameType.DATA), raw, 0))
        if i % 50 == 7:
            out.append((int(ring.FrameType.DATA), b'{"channel":"heartbeat"}', 0))
        if i % 90 == 11:
            out.append((int(ring.FrameType.DATA), b"\x00\x01binary", int(ring.FrameFlags.BINARY)))
    big = kraken_book("BTC/USD", 999, "2026-12-06T07:00:09.000000Z")[:-3] + b" " * 300_000 + b"}]}"
    out.append((int(ring.FrameType.DATA), big, 0))
    out.append((int(ring.FrameType.DATA), b"not json", 0))
    return out


def _record(tmp_path, nats_url: str) -> str:
    """Ring -> flusher (segments) and publisher (the stream); returns the data dir."""
    path, data = str(tmp_path / "r.ring"), str(tmp_path / "data")
    ring.create(path, capacity=1 << 20).close()
    os.mkdir(data)
    flusher = start_flusher(path, data, "--fsync", "never", venue="kraken", shard=2)
    bus = parse_config({"servers": [nats_url]})
    msgs = _messages()
    try:
        wait_for(lambda: any(r["name"] == "flusher" and r["alive"]
                             for r in ring.stats(path)["readers"]), 30, "the flusher to attach")

        async def main():
            pub = make_publisher(path, venue="kraken", shard=2, bus=bus, segments=data)
            task = asyncio.ensure_future(pub.run())
            await asyncio.wait_for(pub.started.wait(), timeout(30))
            with ring.Producer(path) as p:
                for typ, raw, flags in msgs:
                    while p.write(raw, type=typ, flags=flags) != ring.WriteStatus.OK:
                        await asyncio.sleep(0.001)     # the ring is full: the flusher is behind
            pub.stop()
            assert await asyncio.wait_for(task, timeout(60)) == 0
        run_async(main())
        wait_for(lambda: next(r for r in ring.stats(path)["readers"] if r["name"] == "flusher")
                 ["next_seq"] == ring.stats(path)["next_seq"], 30, "the flusher to write everything")
    finally:
        flusher.send_signal(signal.SIGTERM)
        assert flusher.wait(timeout(60)) == 0
    assert [(f.payload, f.flags) for f in read(data)
            if f.type != ring.FrameType.CONTROL] == [(r, fl) for t, r, fl in msgs if t == 1]
    return data


def test_replay_to_nats_is_what_the_publisher_put_and_adds_nothing(tmp_path, nats_server_factory):
    a, b = nats_server_factory(), nats_server_factory()
    data = _record(tmp_path, a.url)
    published = run_async(read_stream([a.url], STREAM))
    assert len(published) == len(list(read(data)))

    # into the stream that already holds it: nothing new
    assert cli.main(["replay", data, "--venue", "kraken", "--to-nats", a.url, "--speed", "max"]) == 0
    again = run_async(read_stream([a.url], STREAM))
    assert [(m.stream_seq, m.headers["Nats-Msg-Id"]) for m in again] == [
        (m.stream_seq, m.headers["Nats-Msg-Id"]) for m in published]

    # into an empty stream: the publisher's messages, subject, headers and bytes
    assert cli.main(["replay", data, "--venue", "kraken", "--to-nats", b.url, "--speed", "max"]) == 0
    replayed = run_async(read_stream([b.url], STREAM))
    assert [(m.subject, m.headers, m.data) for m in replayed] == [
        (m.subject, m.headers, m.data) for m in published]
    # ... which are the segment files' messages, byte for byte, keyed by ring and sequence
    ring_id = ring.stats(str(tmp_path / "r.ring"))["ring_id"]
    assert [(m.headers["Nats-Msg-Id"], m.data) for m in replayed] == [
        (f"{ring_id}:{f.seq}", f.payload) for f in read(data)]
    assert {m.subject for m in replayed} >= {"prod.kraken.book.BTC-USD", "prod.kraken.trade.ETH-USD",
                                            "prod.kraken.control.shard-2", "prod.kraken.unrouted"}


def test_replay_to_nats_bad_input(tmp_path, capsys, nats_server):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["replay", str(empty), "--venue", "kraken", "--to-nats", nats_server.url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no segment files" in err


def test_replay_to_nats_takes_prefix_and_streams_from_a_config(tmp_path, nats_server):
    from dataout_helpers import kraken_recording
    data = str(tmp_path / "data")
    rec = kraken_recording(data, 20)
    conf = tmp_path / "c.toml"
    conf.write_text('[nats]\nservers = ["nats://192.0.2.1:4222"]\nprefix = "alt"\n'
                    '[nats.streams.kraken]\nname = "ALT_BOOKS"\n'
                    '[[shard]]\nid = 2\nvenue = "kraken"\ninstruments = ["BTC/USD"]\n')
    assert cli.main(["replay", data, "--venue", "kraken", "--to-nats", nats_server.url,
                     "--config", str(conf)]) == 0
    msgs = run_async(read_stream([nats_server.url], "ALT_BOOKS"))
    assert [m.data for m in msgs] == [v[4] for v in rec.messages.values()]
    assert {m.subject.split(".")[0] for m in msgs} == {"alt"}
    assert "prod.kraken.control.shard-2" not in {m.subject for m in msgs}
    assert "alt.kraken.control.shard-2" in {m.subject for m in msgs}


def test_credentials_in_the_url_stay_out_of_the_output(tmp_path, capsys, nats_server):
    from dataout_helpers import kraken_recording
    data = str(tmp_path / "data")
    kraken_recording(data, 5)
    url = nats_server.url.replace("nats://", "nats://someone:s3cret@")
    cli.main(["replay", data, "--venue", "kraken", "--to-nats", url])
    out = capsys.readouterr()
    assert "s3cret" not in out.err + out.out
    # nothing listens there: a one-line error after a few attempts, no secret in it
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert cli.main(["replay", data, "--venue", "kraken",
                     "--to-nats", f"nats://someone:s3cret@127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no NATS server reachable" in err and "s3cret" not in err
