"""kill -9 of the publisher at random moments under load, and of one node of a
3-node JetStream cluster: still exactly once."""
from __future__ import annotations

import random

import pytest


from conftest_nats import *  # noqa: F401,F403,E402
from conftest_nats import (Load, Shard, assert_exactly_once, disk_frames, head_seq,  # noqa: E402
                           publisher_stats, read_stream, run_async, wait_for)

STREAM = "PROD_TESTV"


def _kill_loop(shard: Shard, servers: list[str], kills: int, seed: int) -> None:
    rnd = random.Random(seed)
    shard.start_flusher()
    shard.start_publisher()
    load = Load(shard.ring_path, count=10**7, size=250, rate=4000).start()
    try:
        for k in range(kills):
            # A random moment, defined by progress rather than time: after 0..2500
            # more frames are committed (0: right after attaching, mid-start-up).
            base = max(shard.reader_seq("publisher"), 0)
            more = rnd.choice([0, rnd.randrange(1, 2500)])
            wait_for(lambda: shard.reader_seq("publisher") >= base + more, 60,
                     f"progress before kill {k}")
            shard.kill("publisher")
            shard.start_publisher()
    finally:
        load.stop()
    load.wait(60)
    wait_for(lambda: shard.reader_seq("publisher") >= head_seq(shard.ring_path), 120,
             "the publisher to commit everything")
    assert shard.stop("publisher") == 0, shard.log("publisher")
    assert shard.stop("flusher") == 0
    expected = disk_frames(shard.data_dir, shard.ring_id)
    assert set(load.written) <= set(expected)
    msgs = run_async(read_stream(servers, STREAM))
    assert_exactly_once(msgs, expected, shard.ring_id, ordered=False)


def test_kill_publisher_5_times(shard: Shard, nats_server):
    _kill_loop(shard, [nats_server.url], kills=5, seed=5)


def test_kill_publisher_25_times(shard: Shard, nats_server):
    _kill_loop(shard, [nats_server.url], kills=25, seed=25)


@pytest.mark.slow
def test_kill_publisher_200_times(shard: Shard, nats_server):
    _kill_loop(shard, [nats_server.url], kills=200, seed=200)


def test_cluster_node_killed_under_load(tmp_path, nats_cluster):
    """R3 stream on 3 nodes; kill -9 one node (the stream leader) and bring it back."""
    import nats

    from flusher.publisher.stream import ensure_stream, parse_config
    cfg = {"servers": nats_cluster.urls, "prefix": "prod",
           "streams": {"testv": {"replicas": 3}}}
    bus = parse_config(cfg)

    async def create() -> str:
        nc = await nats.connect(nats_cluster.urls)
        try:
            info = await ensure_stream(nc, bus.stream_for("testv"))
            return info.cluster.leader
        finally:
            await nc.close()
    leader = run_async(create())
    shard = Shard(tmp_path / "shard", cfg)
    try:
        shard.start_flusher()
        shard.start_publisher()
        load = Load(shard.ring_path, count=24000, size=250, rate=4000).start()
        wait_for(lambda: shard.reader_seq("publisher") > 3000, 60, "publishing to start")
        victim = next(n for n in nats_cluster.nodes if n.name == leader)
        victim.kill()
        at = shard.reader_seq("publisher")
        wait_for(lambda: shard.reader_seq("publisher") > at + 3000, 60,
                 "publishing to continue with a node down")
        victim.start(timeout=60)
        load.wait(60)
        wait_for(lambda: shard.reader_seq("publisher") >= head_seq(shard.ring_path), 120,
                 "the publisher to commit everything")
        assert shard.stop("publisher") == 0, shard.log("publisher")
        assert shard.stop("flusher") == 0
        expected = disk_frames(shard.data_dir, shard.ring_id)
        msgs = run_async(read_stream(nats_cluster.urls, STREAM))
        assert_exactly_once(msgs, expected, shard.ring_id, ordered=False)
        st = publisher_stats(shard.log("publisher"))
        assert st.get("lost", 0) == 0
    finally:
        shard.close()


def test_restart_after_the_duplicate_window(shard: Shard, nats_server):
    """kill -9, then a restart after the duplicate window expired: frames the
    dead process had stored but not committed are found in the stream and not
    published again (without the read-back they would be stored twice)."""
    import time
    shard.nats_cfg.update({"horizon": 1.0, "streams": {"testv": {"duplicate_window": 1.5}}})
    shard.start_flusher()
    shard.start_publisher()
    load = Load(shard.ring_path, count=8000, size=250, rate=4000).start()
    wait_for(lambda: shard.reader_seq("publisher") > 3000, 60, "publishing to start")
    shard.kill("publisher")
    killed_at = time.monotonic()
    load.wait(60)
    wait_for(lambda: time.monotonic() - killed_at > 2.0, 10, "the duplicate window to expire")
    shard.start_publisher()
    wait_for(lambda: shard.reader_seq("publisher") >= head_seq(shard.ring_path), 120,
             "the publisher to commit everything")
    assert shard.stop("publisher") == 0, shard.log("publisher")
    assert shard.stop("flusher") == 0
    expected = disk_frames(shard.data_dir, shard.ring_id)
    msgs = run_async(read_stream([nats_server.url], STREAM))
    assert_exactly_once(msgs, expected, shard.ring_id, ordered=False)
    st = publisher_stats(shard.log("publisher"))
    assert st.get("startup_scan") == 1, st
