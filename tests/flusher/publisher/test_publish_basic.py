"""The publisher end to end against a real nats-server: exactly once, in order,
byte for byte, with subjects and headers; shutdown drain; oversize frames."""
from __future__ import annotations

import json


from common.status import EXIT_DRAIN_UNFINISHED  # noqa: E402
from conftest_nats import *  # noqa: F401,F403,E402
from conftest_nats import (Load, Shard, assert_exactly_once, disk_frames, head_seq,  # noqa: E402
                           publisher_stats, read_stream, run_async, wait_for)

STREAM = "PROD_TESTV"


def test_every_frame_exactly_once_in_order(shard: Shard, nats_server):
    shard.start_flusher()
    shard.start_publisher()
    load = Load(shard.ring_path, count=20000, size=300).start()
    load.wait()
    wait_for(lambda: shard.reader_seq("publisher") >= head_seq(shard.ring_path), 60,
             "the publisher to commit everything")
    assert shard.stop("publisher") == 0, shard.log("publisher")
    assert shard.stop("flusher") == 0
    expected = disk_frames(shard.data_dir, shard.ring_id)
    assert set(load.written) <= set(expected)
    msgs = run_async(read_stream([nats_server.url], STREAM))
    assert_exactly_once(msgs, expected, shard.ring_id, ordered=True)
    unrouted = [m for m in msgs if m.subject.endswith(".unrouted")]
    assert unrouted, "the load contains unroutable frames"


def test_shutdown_drain_publishes_what_is_left(shard: Shard, nats_server):
    """SIGTERM after the producer stopped: everything published, exit 0."""
    shard.start_flusher()
    load = Load(shard.ring_path, count=3000, size=100).start()
    load.wait()            # the producer has stopped; the publisher starts afterwards
    shard.start_publisher()
    assert shard.stop("publisher") == 0, shard.log("publisher")
    assert shard.reader_seq("publisher") == head_seq(shard.ring_path)
    assert shard.stop("flusher") == 0
    expected = disk_frames(shard.data_dir, shard.ring_id)
    msgs = run_async(read_stream([nats_server.url], STREAM))
    assert_exactly_once(msgs, expected, shard.ring_id)


def _write_frames(path: str, frames: list[bytes]) -> None:
    import ring
    with ring.Producer(path) as p:
        for body in frames:
            assert p.write(body) == ring.WriteStatus.OK


def test_fragmented_frames_are_published_whole(shard: Shard, nats_server):
    """A 2 MiB frame travels through a 1 MiB ring as fragments: one message."""
    shard.start_flusher()
    shard.start_publisher()
    big = b"book.BIG|" + bytes(range(256)) * (8 * 1024)        # 2 MiB + 9 bytes
    _write_frames(shard.ring_path, [b"book.A|small", big, b"book.A|after"])
    wait_for(lambda: shard.reader_seq("publisher") >= head_seq(shard.ring_path), 60,
             "the publisher to commit everything")
    assert shard.stop("publisher") == 0, shard.log("publisher")
    assert shard.stop("flusher") == 0
    expected = disk_frames(shard.data_dir, shard.ring_id)
    assert [b for _, b in expected.values()] == [b"book.A|small", big, b"book.A|after"]
    msgs = run_async(read_stream([nats_server.url], STREAM))
    assert_exactly_once(msgs, expected, shard.ring_id)


def test_oversize_frame_becomes_a_notice(tmp_path, nats_server_factory):
    """Above the server's max_payload: not published, counted, a control notice
    takes its sequence; the frame stays on disk."""
    srv = nats_server_factory(max_payload=64 * 1024)
    shard = Shard(tmp_path / "shard", {"servers": [srv.url], "prefix": "prod"})
    try:
        shard.start_flusher()
        shard.start_publisher()
        big = b"book.BIG|" + b"z" * (100 * 1024)
        _write_frames(shard.ring_path, [b"book.A|1", big, b"book.A|2"])
        wait_for(lambda: shard.reader_seq("publisher") >= head_seq(shard.ring_path), 60,
                 "the publisher to commit everything")
        assert shard.stop("publisher") == 0, shard.log("publisher")
        assert shard.stop("flusher") == 0
        expected = disk_frames(shard.data_dir, shard.ring_id)
        big_seq = next(s for s, (_, b) in expected.items() if b == big)   # still on disk
        msgs = run_async(read_stream([srv.url], STREAM))
        by_seq = {m.seq: m for m in msgs}
        assert sorted(by_seq) == sorted(expected) and len(msgs) == len(expected)
        notice = by_seq[big_seq]
        assert notice.subject == "prod.testv.control.shard-3"
        body = json.loads(notice.data)
        assert body["kind"] == "oversize" and body["size"] == len(big) and body["seq"] == big_seq
        assert notice.headers["Nats-Msg-Id"] == f"{shard.ring_id}:{big_seq}"
        st = publisher_stats(shard.log("publisher"))
        assert st["oversize"] == 1
    finally:
        shard.close()


def test_sigterm_while_nats_is_down_exits_75_within_the_bound(shard: Shard, nats_server):
    """No hang: NATS gone, window full, SIGTERM -> exit EXIT_DRAIN_UNFINISHED
    (frames left unacknowledged) after the drain bound; the committed cursor
    stays at the acknowledged prefix."""
    shard.start_flusher()
    shard.start_publisher("--window", "256", "--drain-timeout", "1")
    load = Load(shard.ring_path, count=2000, size=100).start()
    load.wait()
    wait_for(lambda: shard.reader_seq("publisher") >= head_seq(shard.ring_path), 60,
             "the publisher to commit everything")
    committed = shard.reader_seq("publisher")
    nats_server.stop()
    load = Load(shard.ring_path, count=2000, size=100).start()
    load.wait()
    assert shard.stop("publisher", seconds=30) == EXIT_DRAIN_UNFINISHED, shard.log("publisher")
    assert shard.reader_seq("publisher") == committed
    st = publisher_stats(shard.log("publisher"))
    assert st["drain_timeout"] == 1


def test_sigterm_before_nats_ever_answers(tmp_path):
    from flusher.publisher.nats_embedded import free_port
    shard = Shard(tmp_path / "shard", {"servers": [f"nats://127.0.0.1:{free_port()}"]})
    try:
        p = shard.start_publisher("--drain-timeout", "1", wait=False)
        wait_for(lambda: "retrying forever" in shard.log("publisher"), 30,
                 "the publisher to report the unreachable server")
        assert shard.stop("publisher", seconds=30) == 0, shard.log("publisher")
        assert p.returncode == 0
    finally:
        shard.close()


def test_wrong_credentials_stay_up_retrying(tmp_path, nats_server_factory):
    """Refused credentials are an outage of the bus, not a reason to exit:
    disk capture never depends on NATS (issue 13, scenario 2)."""
    srv = nats_server_factory(user="u", password="right")
    shard = Shard(tmp_path / "shard", {"servers": [srv.url], "user": "u", "password": "bad"})
    try:
        p = shard.start_publisher("--drain-timeout", "1", wait=False)
        wait_for(lambda: 'event=nats_connect_failed state="refusing credentials"' in shard.log("publisher"), 30,
                 "the publisher to report the refused credentials")
        assert p.poll() is None, "the publisher stays up, retrying"
        assert shard.stop("publisher", seconds=30) == 0, shard.log("publisher")
    finally:
        shard.close()


def test_unknown_config_key_exit_2(tmp_path):
    shard = Shard(tmp_path / "shard", {"servers": ["nats://127.0.0.1:1"], "stream": {}})
    try:
        p = shard.start_publisher(wait=False)
        assert p.wait(30) == 2
        assert "nats.stream" in shard.log("publisher")
    finally:
        shard.close()
