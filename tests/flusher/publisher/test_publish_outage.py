"""NATS outages: longer than the ring holds (catch-up from the segment files),
and longer than the catch-up horizon (read back what the stream stored)."""
from __future__ import annotations



from conftest_nats import *  # noqa: F401,F403,E402
from conftest_nats import (Load, Shard, assert_exactly_once, disk_frames, head_seq,  # noqa: E402
                           publisher_stats, read_stream, ring_lapped, run_async, wait_for)

STREAM = "PROD_TESTV"


def _outage(shard: Shard, nats_server, *, hold_s_min: float = 0.0, count: int = 40000,
            kill: bool = False):
    import time
    shard.start_flusher()
    shard.start_publisher("--window", "512")    # smaller than the ring, see ring_lapped
    load = Load(shard.ring_path, count=count, size=300, rate=8000).start()
    wait_for(lambda: shard.reader_seq("publisher") > 2000, 30, "the publisher to get going")
    if kill:
        nats_server.kill()          # acks in flight are lost; their messages may be stored
    else:
        nats_server.stop()
    down_at = time.monotonic()
    # The publisher must fall more than a whole ring behind while NATS is away.
    wait_for(lambda: ring_lapped(shard), 60, "the ring to lap the publisher")
    wait_for(lambda: time.monotonic() - down_at >= hold_s_min, 30, "the outage to last")
    nats_server.start()
    load.wait(120)
    wait_for(lambda: shard.reader_seq("publisher") >= head_seq(shard.ring_path), 120,
             "the publisher to commit everything after the outage")
    assert shard.stop("publisher") == 0, shard.log("publisher")
    assert shard.stop("flusher") == 0
    expected = disk_frames(shard.data_dir, shard.ring_id)
    assert set(load.written) <= set(expected)
    msgs = run_async(read_stream([nats_server.url], STREAM))
    assert_exactly_once(msgs, expected, shard.ring_id, ordered=False)
    return publisher_stats(shard.log("publisher"))


def test_outage_longer_than_the_ring(shard: Shard, nats_server):
    st = _outage(shard, nats_server)
    assert st.get("lapped", 0) >= 1
    assert st.get("catchup_frames", 0) > 0, st       # frames came from the segment files
    assert st.get("catchup_done", 0) >= 1, st        # and it went back to the ring
    assert st.get("lost", 0) == 0, st


def test_outage_longer_than_the_horizon(shard: Shard, nats_server):
    """With a 1 s horizon (1.5 s duplicate window) an outage of a few seconds
    (kill -9 of the server) outlasts de-duplication: frames sent before it are
    resent only after reading back what the stream stored.  Whether any frame
    was in flight at the kill is up to timing, so the read-back itself is
    asserted in test_nats_window (deterministic) and
    test_restart_after_the_duplicate_window; here: exactly once regardless."""
    shard.nats_cfg.update({"horizon": 1.0, "streams": {"testv": {"duplicate_window": 1.5}}})
    st = _outage(shard, nats_server, hold_s_min=3.0, count=30000, kill=True)
    assert st.get("lost", 0) == 0, st


def test_nats_down_at_start_then_up(tmp_path):
    """The publisher starts before NATS exists: it waits (retrying forever), the
    ring laps it, and when NATS comes up everything arrives once."""
    from flusher.publisher.nats_embedded import NatsServer, free_port
    port = free_port()
    srv = NatsServer(tmp_path / "nats", port=port)
    shard = Shard(tmp_path / "shard", {"servers": [srv.url], "prefix": "prod"})
    try:
        shard.start_flusher()
        shard.start_publisher("--window", "512", wait=False)
        wait_for(lambda: "retrying forever" in shard.log("publisher"), 30,
                 "the publisher to report the unreachable server")
        load = Load(shard.ring_path, count=12000, size=300).start()
        load.wait(60)
        srv.start()
        wait_for(lambda: shard.reader_seq("publisher") >= head_seq(shard.ring_path), 120,
                 "the publisher to commit everything")
        assert shard.stop("publisher") == 0, shard.log("publisher")
        assert shard.stop("flusher") == 0
        expected = disk_frames(shard.data_dir, shard.ring_id)
        msgs = run_async(read_stream([srv.url], STREAM))
        assert_exactly_once(msgs, expected, shard.ring_id)
        st = publisher_stats(shard.log("publisher"))
        assert st["connect_failed"] >= 1
    finally:
        shard.close()
        srv.stop()
