"""A frame holding events of several markets (Polymarket's initial dump) is
published as one message per event, each to its own market's subject, with
the Msg-Id ``<ring id>:<seq>:<j>`` and ``Capture-Part: j/k``; every other
frame exactly as before.  Real nats-server; the publisher wired the way
``python -m capture.publish`` wires it (in-process here, a child process for
the crash test)."""
from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time

import orjson

from conftest_nats import *  # noqa: F401,F403,E402
from conftest_nats import (REPO, Shard, disk_frames, head_seq, publisher_stats,  # noqa: E402
                           read_stream, ring_lapped, run_async, timeout, wait_for)

import ring  # noqa: E402
from capture import venues  # noqa: E402
from capture.publish import make_publisher  # noqa: E402
from flusher.publisher.stream import parse_config  # noqa: E402

VENUE = "polymarket"
STREAM = "PROD_POLYMARKET"
DATA = int(ring.FrameType.DATA)


def book(market: int, token: int, n: int) -> dict:
    """A book event shaped as the venue documents it (see the conformance
    fixtures' initial dump); ``n`` makes every event's bytes distinct."""
    return {"event_type": "book", "asset_id": str(10**20 + token), "market": "0x%064x" % market,
            "bids": [{"price": ".%02d" % (n % 97 + 1), "size": str(n)}],
            "asks": [{"price": ".99", "size": "1"}], "timestamp": str(1764979200000 + n),
            "hash": "0x%x" % n}


def dump(n_books: int, n_markets: int, salt: int = 0) -> list[dict]:
    """An initial dump: n books across n_markets markets (a market's two
    tokens sit side by side, as the venue sends them)."""
    return [book(i % n_markets, i, salt * 100003 + i) for i in range(n_books)]


def expected_messages(frames: dict[int, tuple[int, bytes]], ring_id: str) -> dict[str, tuple[str, bytes, str | None]]:
    """Msg-Id -> (subject, payload, Capture-Part) for every frame the ring
    got, by the rule (split frames per event, the rest whole)."""
    split = venues.fanout_fn("prod", VENUE)
    subject = venues.subject_fn("prod", VENUE, 0)
    out = {}
    for seq, (typ, raw) in frames.items():
        parts = split(raw) if typ == DATA else None
        if parts:
            for j, (s, b) in enumerate(parts, 1):
                out[f"{ring_id}:{seq}:{j}"] = (s, b, f"{j}/{len(parts)}")
        else:
            out[f"{ring_id}:{seq}"] = (subject(raw) or f"prod.{VENUE}.unrouted", raw, None)
    return out


def check_exactly_once(msgs, want: dict) -> None:
    seen: dict[str, object] = {}
    dups = []
    for m in msgs:
        mid = m.headers["Nats-Msg-Id"]
        if mid in seen:
            dups.append(mid)
        seen[mid] = m
    assert not dups, f"{len(dups)} stored twice, first {dups[:5]}"
    missing = sorted(set(want) - set(seen))
    extra = sorted(set(seen) - set(want))
    assert not missing, f"{len(missing)} missing, first {missing[:5]}"
    assert not extra, f"{len(extra)} unexpected, first {extra[:5]}"
    for mid, (subj, body, part) in want.items():
        m = seen[mid]
        assert (m.subject, m.data) == (subj, body), mid
        assert m.headers.get("Capture-Part") == part, mid
        assert m.headers["Capture-Seq"] == mid.split(":")[1]


def _publish_in_process(path: str, url: str, frames: list[bytes]) -> dict:
    bus = parse_config({"servers": [url], "prefix": "prod"})

    async def main():
        pub = make_publisher(path, venue=VENUE, shard=0, bus=bus, segments=None)
        task = asyncio.ensure_future(pub.run())
        await asyncio.wait_for(pub.started.wait(), timeout(30))
        with ring.Producer(path) as p:
            for raw in frames:
                assert p.write(raw, type=DATA) == ring.WriteStatus.OK
        pub.stop()
        assert await asyncio.wait_for(task, timeout(30)) == 0
        return pub.all_stats()
    return run_async(main())


def test_initial_dump_lands_on_each_markets_subject(tmp_path, nats_server):
    n_books, n_markets = 60, 23
    events = dump(n_books, n_markets)
    whole = orjson.dumps(book(5, 1, 7))                  # one event, not an array
    same_market = orjson.dumps([book(9, 1, 8), book(9, 2, 9)])  # an array of one market
    frames = [whole, orjson.dumps(events), same_market, b"PONG"]
    path = str(tmp_path / "r.ring")
    ring.create(path, capacity=1 << 20).close()
    st = _publish_in_process(path, nats_server.url, frames)
    ring_id = ring.stats(path)["ring_id"]
    msgs = run_async(read_stream([nats_server.url], STREAM))

    # N messages, one per book, on the M markets' subjects, each one event's bytes
    parts = [m for m in msgs if "Capture-Part" in m.headers]
    assert len(parts) == n_books
    assert {m.subject for m in parts} == {
        f"prod.polymarket.book.0x{i:064x}" for i in range(n_markets)}
    for j, (m, ev) in enumerate(zip(parts, events), 1):
        assert orjson.loads(m.data) == ev
        assert m.subject == f"prod.polymarket.book.{ev['market']}"
        assert m.headers["Nats-Msg-Id"] == f"{ring_id}:1:{j}"
        assert m.headers["Capture-Part"] == f"{j}/{n_books}"
        assert m.headers["Capture-Seq"] == "1"
        assert m.headers["Capture-Shard"] == "0"
        assert int(m.headers["Capture-Recv-Ns"]) > 0
    assert len({m.headers["Capture-Recv-Ns"] for m in parts}) == 1   # the frame's own stamp

    # the frames that do not split: byte for byte and id for id as before
    rest = [m for m in msgs if "Capture-Part" not in m.headers]
    assert [m.data for m in rest] == [whole, same_market, b"PONG"]
    assert [m.headers["Nats-Msg-Id"] for m in rest] == [f"{ring_id}:{s}" for s in (0, 2, 3)]
    assert [m.subject for m in rest] == [
        f"prod.polymarket.book.0x{5:064x}", f"prod.polymarket.book.0x{9:064x}",
        "prod.polymarket.control.shard-0"]
    assert all(set(m.headers) == {"Nats-Msg-Id", "Capture-Seq", "Capture-Recv-Ns",
                                  "Capture-Shard"} for m in rest)
    assert st["split_frames"] == 1 and st["split_events"] == n_books
    assert st["published"] == n_books + 3
    check_exactly_once(msgs, expected_messages(
        {i: (DATA, f) for i, f in enumerate(frames)}, ring_id))
    # the ring (and so the disk) keeps the frame as received
    with ring.Reader(path, "check", tethered=False, start="oldest") as rd:
        b = rd.read()
        assert [bytes(b.payload(i)) for i in range(len(b))] == frames


def test_routing_without_a_split_has_no_fanout():
    """Only a venue that can split gets the per-frame check at all."""
    from capture.publish import venue_routing
    assert venue_routing("prod", "kraken", 0).fanout_fn is None
    assert venue_routing("prod", "kalshi", 0).fanout_fn is None
    assert venue_routing("prod", VENUE, 0).fanout_fn is not None
