"""The split-frame rule below the venues: pipeline keys, Msg-Id parsing, the
read-back of a stream that holds some events of a frame, and a publisher
given a fan-out function (a toy one here: flusher/ knows no venue)."""
from __future__ import annotations

import asyncio
import time

import nats
import pytest

from conftest_nats import *  # noqa: F401,F403,E402
from conftest_nats import read_stream, run_async, timeout  # noqa: E402

import ring  # noqa: E402
from flusher.publisher.publish import Publisher  # noqa: E402
from flusher.publisher import routing  # noqa: E402
from flusher.publisher.split import MAX_PARTS, key_of_msg_id, key_seq, part_key  # noqa: E402
from flusher.publisher.stream import parse_config, stored_sequences  # noqa: E402


@pytest.mark.parametrize("seq", [0, 1, 7, 2**32 + 5, 2**64 - 1])
def test_part_keys_never_meet_a_sequence_or_each_other(seq):
    keys = [part_key(seq, j) for j in (1, 2, MAX_PARTS)]
    assert len(set(keys)) == 3
    assert all(k > 2**64 for k in keys)          # above every ring sequence
    assert [key_seq(k) for k in keys] == [seq] * 3
    assert key_seq(seq) == seq
    assert part_key(seq, 1) != part_key(seq + 1, 1)


def test_msg_id_suffixes():
    assert key_of_msg_id("42") == 42
    assert key_of_msg_id("42:3") == part_key(42, 3)
    for bad in ("", "x", "42:", "42:0", "42:x", ":3", "42:3:1", f"42:{MAX_PARTS + 1}", "-4"):
        assert key_of_msg_id(bad) is None, bad


def test_read_back_names_each_stored_event(nats_server):
    """A stream holding whole frames and some events of split frames: the
    read-back gives the keys of exactly those (ring, min_seq respected)."""
    async def main():
        nc = await nats.connect(nats_server.url)
        await nc.jsm().add_stream(name="S", subjects=["p.v.>"], duplicate_window=60)
        js = nc.jetstream()
        t0 = time.time()
        ids = ["aa:4", "aa:5", "aa:6:1", "aa:6:2", "aa:3:1", "bb:7:1", "aa:8:x", "aa:9:1"]
        for mid in ids:
            await js.publish("p.v.book.x", b"e", headers={"Nats-Msg-Id": mid})
        got = await stored_sequences(nc, "S", "p.v.>", "aa:", t0 - 1, min_seq=5)
        await nc.close()
        return got
    assert run_async(main()) == {5, part_key(6, 1), part_key(6, 2), part_key(9, 1)}


def toy_fanout(raw: bytes):
    """``[a|b|c]`` -> one event per ``|``-separated item, routed by its head."""
    items = raw[1:-1].split(b"+")
    if len(items) < 2:
        return None
    return [(f"prod.testv.{i.partition(b'|')[0].decode()}", i) for i in items]


def test_publisher_splits_only_array_frames(tmp_path, nats_server_factory):
    """Through the ring, with a toy fan-out: an array frame becomes its
    events (ids, headers, subjects), a frame that opens with ``[`` but does
    not split, and every other frame, are published whole; the cursor passes
    the split frame; a part too large for the server becomes a notice."""
    nats_server = nats_server_factory(max_payload=64 << 10)
    path = str(tmp_path / "r.ring")
    ring.create(path, capacity=1 << 20).close()
    bus = parse_config({"servers": [nats_server.url], "prefix": "prod"})
    big = b"book.Z|" + b"z" * (100 << 10)       # above the server's max_payload
    frames = [b"book.A|1", b"[book.A|2+trade.B|3+book.C|4]", b"[book.A|5]",
              b"[book.A|6+" + big + b"]", b"trade.B|7"]

    async def main():
        pub = Publisher(path, venue="testv", shard=1, bus=bus,
                        subject_fn=routing.test_subject_fn("prod", "testv"), fanout_fn=toy_fanout)
        task = asyncio.ensure_future(pub.run())
        await asyncio.wait_for(pub.started.wait(), timeout(30))
        with ring.Producer(path) as p:
            for raw in frames:
                assert p.write(raw) == ring.WriteStatus.OK
        pub.stop()
        assert await asyncio.wait_for(task, timeout(30)) == 0
        return pub.all_stats()
    st = run_async(main())
    rid = ring.stats(path)["ring_id"]
    msgs = run_async(read_stream([nats_server.url], "PROD_TESTV"))
    got = [(m.headers["Nats-Msg-Id"], m.headers.get("Capture-Part"), m.subject) for m in msgs]
    assert got == [
        (f"{rid}:0", None, "prod.testv.book.A"),
        (f"{rid}:1:1", "1/3", "prod.testv.book.A"),
        (f"{rid}:1:2", "2/3", "prod.testv.trade.B"),
        (f"{rid}:1:3", "3/3", "prod.testv.book.C"),
        (f"{rid}:2", None, "prod.testv.[book.A"),     # the toy subject_fn, as before
        (f"{rid}:3:1", "1/2", "prod.testv.book.A"),
        (f"{rid}:3:2", "2/2", "prod.testv.control.shard-1"),
        (f"{rid}:4", None, "prod.testv.trade.B"),
    ]
    assert [m.data for m in msgs[1:4]] == [b"book.A|2", b"trade.B|3", b"book.C|4"]
    assert msgs[0].data == frames[0] and msgs[4].data == frames[2] and msgs[7].data == frames[4]
    notice = msgs[6].data
    assert b'"kind": "oversize"' in notice and b'"part": "2/2"' in notice
    assert st["oversize"] == 1 and st["split_frames"] == 2 and st["split_events"] == 5
    assert all(m.headers["Capture-Seq"] == m.headers["Nats-Msg-Id"].split(":")[1] for m in msgs)
    with ring.Reader(path, "publisher", tethered=False) as rd:     # the cursor passed them all
        assert rd.next_seq == len(frames)
