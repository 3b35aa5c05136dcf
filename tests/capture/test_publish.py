"""Subjects through the publisher with the venues' real route extractors:
data to {prefix}.{venue}.{channel}.{symbol}, chatter and control frames to
the shard's control subject, unroutable and malformed frames to unrouted.
The publisher runs in-process here (Publisher.run / stop), wired the way
``python -m capture.publish`` wires it."""
from __future__ import annotations

import asyncio
import json

import pytest


from conftest_nats import *  # noqa: F401,F403,E402
from conftest_nats import read_stream, run_async, timeout  # noqa: E402

import ring  # noqa: E402
from capture import venues  # noqa: E402
from capture.publish import make_publisher, venue_routing  # noqa: E402
from flusher.publisher.stream import parse_config  # noqa: E402

SHAPES = {
    "kraken": [
        (b'{"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD","bids":[],"asks":[],'
         b'"checksum":1,"timestamp":"2026-11-22T00:00:00.000000Z"}]}', "prod.kraken.book.BTC-USD"),
        (b'{"channel":"trade","type":"update","data":[{"symbol":"ETH/USD","trade_id":7}]}',
         "prod.kraken.trade.ETH-USD"),
        (b'{"channel":"heartbeat"}', "prod.kraken.control.shard-2"),
        (b'{"method":"subscribe","result":{"channel":"book","symbol":"BTC/USD"},"success":true}',
         "prod.kraken.control.shard-2"),
        (b"not json at all", "prod.kraken.unrouted"),
        (b'{"channel":"book","data":[', "prod.kraken.unrouted"),
    ],
    "polymarket": [
        (b'{"event_type":"book","asset_id":"123456789","market":"0xabc","bids":[],"asks":[]}',
         None),
        (b'[{"event_type":"book","asset_id":"1","market":"0xdef"}]', None),
        (b"PONG", None),
        (b"\xff\xfe garbage", "prod.polymarket.unrouted"),
    ],
    "kraken_futures": [
        (b'{"feed":"book","product_id":"PF_XBTUSD","side":"buy","seq":5,"price":1,"qty":2}', None),
        (b'{"event":"info","version":1}', None),
        (b'{"feed":"heartbeat","time":1}', None),
    ],
}


@pytest.mark.parametrize("venue", sorted(SHAPES))
def test_subject_function_agrees_with_the_venue_module(venue):
    fn = venue_routing("prod", venue, 2).subject_fn
    for raw, want in SHAPES[venue]:
        got = fn(raw) or f"prod.{venue}.unrouted"
        assert got == venues.subject("prod", venue, raw, shard=2), raw
        if want is not None:
            assert got == want, raw


def test_publisher_routes_every_shape(tmp_path, nats_server):
    path = str(tmp_path / "r.ring")
    ring.create(path, capacity=1 << 20).close()
    bus = parse_config({"servers": [nats_server.url]})
    frames = [(int(ring.FrameType.DATA), raw) for raw, _ in SHAPES["kraken"]]
    frames.append((int(ring.FrameType.CONTROL), json.dumps({"kind": "conn_open"}).encode()))

    async def main():
        pub = make_publisher(path, venue="kraken", shard=2, bus=bus, segments=None)
        task = asyncio.ensure_future(pub.run())
        await asyncio.wait_for(pub.started.wait(), timeout(30))
        with ring.Producer(path) as p:
            for typ, raw in frames:
                assert p.write(raw, type=typ) == ring.WriteStatus.OK
        pub.stop()
        assert await asyncio.wait_for(task, timeout(30)) == 0
        return pub.all_stats()
    st = run_async(main())
    msgs = run_async(read_stream([nats_server.url], "PROD_KRAKEN"))
    assert [m.data for m in msgs] == [raw for _, raw in frames]
    want = [w for _, w in SHAPES["kraken"]] + ["prod.kraken.control.shard-2"]
    assert [m.subject for m in msgs] == want
    assert st["unrouted"] == 2
