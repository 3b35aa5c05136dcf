"""Catch-up from the segment files through the batched reader: a publisher lapped
from its first frame takes everything from the files the real flusher wrote
(whole frames, fragment chains, control records, unroutable frames), exactly
once, with the same Msg-Ids and headers as from the ring, then goes back to the
ring for the rest."""
from __future__ import annotations

import asyncio
import os

import ring
from flusher.publisher.publish import Publisher
from flusher.publisher import routing
from flusher.publisher.stream import parse_config
from flusher.segments.drain import Flusher, FlusherConfig

from conftest_nats import *  # noqa: F401,F403,E402
from conftest_nats import (SHARD, VENUE, assert_exactly_once, disk_frames,  # noqa: E402
                           payload_for, read_stream, run_async)

STREAM = "PROD_TESTV"


def _write_through_small_ring(tmp_path, count: int) -> tuple[str, str]:
    data = str(tmp_path / "data")
    os.makedirs(data, mode=0o700)
    path = str(tmp_path / "shard.ring")
    ring.create(path, 1 << 20).close()
    # the publisher's cursor from the first frame: lapped many times over
    ring.Reader(path, "publisher", tethered=False, start="oldest").close()
    fl = Flusher(FlusherConfig(ring=path, data_dir=data, venue=VENUE, shard=SHARD,
                               segment_bytes=4 << 20))
    p = ring.Producer(path)
    try:
        for i in range(count):
            size = 300_000 if i % 997 == 400 else 150 + i % 700   # some fragmented (> 128 KiB)
            body = payload_for(i, size)
            while p.write(body):
                fl.step()
            if i % 2500 == 7:
                while p.write_control("test_marker", i=i):
                    fl.step()
        while fl.step():
            pass
    finally:
        fl.close()
        p.close()
    return path, data


def test_lapped_publisher_catches_up_exactly_once(tmp_path, nats_server):
    path, data = _write_through_small_ring(tmp_path, 12_000)
    bus = parse_config({"servers": [nats_server.url], "prefix": "prod"})
    result = {}

    async def main() -> None:
        pub = Publisher(path, venue=VENUE, shard=SHARD, bus=bus, segments=data,
                        subject_fn=routing.test_subject_fn("prod", VENUE))
        pub.stop()            # the producer has stopped: run() drains and returns
        result["code"] = await pub.run()
        result["stats"] = pub.all_stats()
    asyncio.run(main())
    st = result["stats"]
    assert result["code"] == 0, st
    ring_id = ring.stats(path)["ring_id"]
    expected = disk_frames(data, ring_id)
    assert any(t == int(ring.FrameType.CONTROL) for t, _ in expected.values())
    # most came from the files, the rest from the ring, nothing was lost
    assert st["disk_frames"] > len(expected) // 2, st
    assert st["catchup_done"] >= 1 and st.get("lost", 0) == 0, st
    msgs = run_async(read_stream([nats_server.url], STREAM))
    assert_exactly_once(msgs, expected, ring_id)
