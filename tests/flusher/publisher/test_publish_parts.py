"""The publisher's parts on their own: each owns its state and works with only
what it is handed (counters, callables, a fake ring reader), no NATS server
and no Publisher around it."""
from __future__ import annotations

import asyncio
import collections
import logging

from flusher_helpers import frames_of, write_segment

from common.errors import CorruptFrame, Lapped
from flusher.publisher.catchup import SegmentCatchup
from flusher.publisher.position import Position
from flusher.publisher.publish import Publisher
from flusher.publisher.routing import SubjectRouter
from flusher.publisher.session import NatsSession, ReadBack
from flusher.publisher.split import SplitPublisher, part_key
from flusher.publisher.stream import parse_config
from ring.frame import FrameType

RING_ID = b"R" * 16
LAP_POS = 123456


class _Ring:
    """What the catch-up asks of the ring reader."""

    def __init__(self, oldest: int, head: int, stopped: bool = False) -> None:
        self.oldest, self.head, self.stopped = oldest, head, stopped

    def resume_oldest(self) -> tuple[int, int]:
        return 0, self.oldest

    def producer_stopped(self) -> bool:
        return self.stopped

    def head_seq(self) -> int:
        return self.head


class _Loop:
    """Stands in for the publisher's frame loop: records what it is handed and
    moves the shared position as the real one does."""

    def __init__(self, position: Position) -> None:
        self.position = position
        self.seqs: list[int] = []
        self.ends: set[int] = set()
        self.missing: set[str | None] = set()
        self.commits = 0
        self.lost: list[tuple[int, int, str]] = []

    async def publish_frames(self, seqs, tss, types, flags, conns, payloads, ends, missing=None) -> int:
        new = [s for s in seqs if s >= self.position.next_seq]
        self.seqs += new
        self.ends.update(ends)
        self.missing.add(missing)
        if new:
            self.position.next_seq = new[-1] + 1
        return len(new)

    def commit(self) -> None:
        self.commits += 1

    def on_lost(self, first: int, last: int, why: str) -> None:
        self.lost.append((first, last, why))


def _catchup(segments, next_seq: int, disk_wait: float = 60.0):
    pos = Position(next_seq)
    loop = _Loop(pos)
    stats: collections.Counter[str] = collections.Counter()
    cu = SegmentCatchup(pos, segments=segments, venue="test", shard=0, disk_wait=disk_wait,
                        stats=stats, stopping=asyncio.Event(), publish_frames=loop.publish_frames,
                        commit=loop.commit, lost=loop.on_lost)
    return cu, pos, loop, stats


def test_position_restart_gives_a_fresh_assembler_and_may_move():
    pos = Position(5)
    asm = pos.asm
    pos.restart()
    assert pos.next_seq == 5 and pos.asm is not asm
    pos.restart(at=9)
    assert pos.next_seq == 9


def test_a_lap_sends_the_catchup_to_the_files_and_back_to_the_ring(tmp_path, caplog):
    write_segment(str(tmp_path), frames_of([b"x%d" % i for i in range(10)], first_seq=10), ring_id=RING_ID)
    cu, pos, loop, stats = _catchup(str(tmp_path), next_seq=12)
    asm = pos.asm
    with caplog.at_level(logging.INFO, logger="capture.publisher"):
        cu.lapped(Lapped("publisher", LAP_POS, 12, 0, 15))
        assert cu.mode == "disk" and pos.asm is not asm and stats["lapped"] == 1
        done = asyncio.run(cu.pump(_Ring(oldest=15, head=20), RING_ID))
    assert not done
    assert loop.seqs == list(range(12, 20))             # from next_seq, not the file's first frame
    assert loop.ends == {LAP_POS}                       # the commit token of frames read from disk
    assert loop.missing == {"missing from the segment files"} and loop.commits >= 1
    assert cu.mode == "ring" and pos.next_seq == 20     # the ring holds 20: back on it
    assert (stats["disk_frames"], stats["catchup_rounds"], stats["catchup_done"]) == (8, 1, 1)
    events = [r.event for r in caplog.records if r.name == "capture.publisher" and hasattr(r, "event")]
    assert events == ["lapped", "caught_up"]


def test_files_of_another_ring_are_not_read(tmp_path):
    write_segment(str(tmp_path), frames_of([b"x"] * 5, first_seq=0), ring_id=b"S" * 16)
    cu, pos, loop, stats = _catchup(str(tmp_path), next_seq=0)
    cu.lapped(Lapped("publisher", LAP_POS, 0, 0, 3))
    asyncio.run(cu.pump(_Ring(oldest=3, head=5), RING_ID))
    assert loop.seqs == [] and cu.mode == "disk" and stats["disk_frames"] == 0


def test_frames_neither_source_holds_are_declared_lost_after_the_wait(tmp_path):
    # No files at all; a negative wait: the first round already waited long enough.
    cu, pos, loop, stats = _catchup(None, next_seq=4, disk_wait=-1.0)
    cu.lapped(Lapped("publisher", LAP_POS, 4, 0, 9))
    asyncio.run(cu.pump(_Ring(oldest=9, head=12), RING_ID))
    assert loop.lost == [(4, 8, "not in the ring and not in the segment files")]
    assert cu.mode == "ring" and pos.next_seq == 9


def test_the_catchup_waits_for_the_files_within_disk_wait(tmp_path):
    cu, pos, loop, stats = _catchup(str(tmp_path), next_seq=4, disk_wait=3600.0)
    cu.lapped(Lapped("publisher", LAP_POS, 4, 0, 9))
    asyncio.run(cu.pump(_Ring(oldest=9, head=12), RING_ID))
    assert loop.lost == [] and cu.mode == "disk" and pos.next_seq == 4


def test_a_corrupt_ring_frame_keeps_the_catchup_on_the_files_until_overwritten(tmp_path, caplog):
    write_segment(str(tmp_path), frames_of([b"x"] * 6, first_seq=0), ring_id=RING_ID)
    cu, pos, loop, stats = _catchup(str(tmp_path), next_seq=0)
    with caplog.at_level(logging.ERROR, logger="capture.publisher"):
        cu.corrupt(CorruptFrame("ring", LAP_POS, 3, "crc"))
        cu.corrupt(CorruptFrame("ring", LAP_POS, 3, "crc"))     # met again: counted once
    assert stats["corrupt_frames"] == 1 and cu.mode == "disk"
    assert len([r for r in caplog.records if getattr(r, "event", None) == "corrupt_frame"]) == 1
    # The ring's oldest frame is still the corrupt one: stay on the files.
    asyncio.run(cu.pump(_Ring(oldest=3, head=6), RING_ID))
    assert loop.seqs == list(range(6)) and cu.mode == "disk"
    # Overwritten (the oldest is past it) and the ring holds next_seq: back.
    asyncio.run(cu.pump(_Ring(oldest=4, head=6), RING_ID))
    assert cu.mode == "ring"


def test_a_stopping_drain_that_ends_on_the_files_is_done(tmp_path):
    write_segment(str(tmp_path), frames_of([b"x"] * 6, first_seq=0), ring_id=RING_ID)
    cu, pos, loop, stats = _catchup(str(tmp_path), next_seq=0)
    cu.corrupt(CorruptFrame("ring", LAP_POS, 2, "crc"))
    cu.stopping.set()
    assert asyncio.run(cu.pump(_Ring(oldest=2, head=6, stopped=True), RING_ID)) is True


def _session(stats):
    bus = parse_config({})
    return NatsSession(bus, bus.stream_for("kraken"), "test", stats, asyncio.Event(),
                       check_deadline=lambda: None, on_change=lambda: None,
                       link_down=lambda: None, link_up=lambda: None)


def test_the_readback_skips_each_stored_key_once_and_rebinding_rearms_the_check():
    stats: collections.Counter[str] = collections.Counter()
    rb = ReadBack(_session(stats), parse_config({}).stream_for("kraken"), 120.0, stats)
    skip = rb.skip
    rb.skip.update({5, part_key(7, 2)})
    assert rb.take(5) and not rb.take(5) and not rb.take(6)
    assert rb.take(part_key(7, 2)) and rb.skip is skip and not skip
    rb.bind_ring("ab:", resumed=False)
    # Not resumed: nothing can be stored already, no read-back (no client needed).
    asyncio.run(rb.first_check(0, 0))
    assert rb.checked and stats["startup_scan"] == 0
    rb.bind_ring("cd:", resumed=True)
    assert not rb.checked and rb.resumed


def test_a_session_disconnect_is_counted_and_passed_on_unless_we_close():
    stats: collections.Counter[str] = collections.Counter()
    downs = []
    bus = parse_config({})
    s = NatsSession(bus, bus.stream_for("kraken"), "test", stats, asyncio.Event(),
                    check_deadline=lambda: None, on_change=lambda: None,
                    link_down=lambda: downs.append(1), link_up=lambda: None)
    asyncio.run(s._on_disconnected())
    assert (s.state, s.last_error, stats["disconnected"], downs) == ("disconnected", "nats: disconnected", 1, [1])
    asyncio.run(s._on_reconnected())
    assert (s.state, s.error, stats["reconnected"]) == ("connected", None, 1)
    s.begin_close()
    asyncio.run(s._on_disconnected())
    assert stats["disconnected"] == 1 and downs == [1]


def test_the_router_caches_counts_and_refuses_bad_subjects():
    stats: collections.Counter[str] = collections.Counter()
    routes = {b"a": "p.v.book.A", b"bad": "p.v.book.*"}
    r = SubjectRouter(lambda raw: routes.get(raw), b"p.v.control.shard-0", b"p.v.unrouted", stats)
    data = int(FrameType.DATA)
    assert r.of(int(FrameType.CONTROL), b"a") == b"p.v.control.shard-0"
    assert r.of(data, b"a") == b"p.v.book.A" and r.of(data, b"a") is r.of(data, b"a")
    assert r.of(data, b"nothing") == b"p.v.unrouted" and stats["unrouted"] == 1
    assert r.of(data, b"bad") == b"p.v.unrouted"
    assert (stats["bad_subject"], stats["unrouted"]) == (1, 2)
    assert r.encode("p.v.book.A") == b"p.v.book.A" and r.encode("p.v.*") == b"p.v.unrouted"
    assert (stats["bad_subject"], stats["unrouted"]) == (2, 3)


class _Pipe:
    def __init__(self) -> None:
        self.put_calls: list[tuple] = []
        self.local: list[tuple] = []

    def put(self, key, subject, body, hdr, commit, ts) -> None:
        self.put_calls.append((key, subject, body, hdr, commit))

    def ack_local(self, key, commit=None) -> None:
        self.local.append((key, commit))


def test_the_splitter_publishes_parts_with_their_ids_and_the_commit_on_the_last():
    stats: collections.Counter[str] = collections.Counter()
    router = SubjectRouter(lambda raw: None, b"p.v.control.shard-2", b"p.v.unrouted", stats)
    stored = {part_key(9, 1)}
    sp = SplitPublisher(lambda raw: [("p.v.a", b"1"), ("p.v.b", b"2"), ("p.v.c", b"3")], shard=2,
                        router=router, stats=stats, fit=lambda seq, subj, body, part: (subj, body),
                        already_stored=lambda k: k in stored and (stored.discard(k) or True))
    sp.bind_ring(b"ab")
    pipe = _Pipe()
    assert sp.publish(pipe, 9, 77, b"[1,2,3]", ("tok",))
    assert pipe.local == [(part_key(9, 1), None)]                # found stored: not published again
    assert [(k, s, c) for k, s, _b, _h, c in pipe.put_calls] == [
        (part_key(9, 2), b"p.v.b", None), (part_key(9, 3), b"p.v.c", ("tok",))]
    hdr = pipe.put_calls[1][3]
    assert b"Nats-Msg-Id: ab:9:3\r\n" in hdr and b"Capture-Part: 3/3\r\n" in hdr
    assert b"Capture-Shard: 2\r\n" in hdr and b"Capture-Recv-Ns: 77\r\n" in hdr
    assert (stats["published"], stats["already_stored"], stats["split_events"]) == (2, 1, 3)


def test_no_part_holds_the_publisher():
    """The parts get the counters and callables, never the Publisher as a bag
    of attributes (a bound method's ``__self__`` is the one way back in)."""
    pub = Publisher("unused.ring", venue="kraken", shard=1, bus=parse_config({}),
                    subject_fn=lambda raw: None, fanout_fn=lambda raw: None)
    parts = [pub.session, pub.readback, pub.router, pub.splitter, pub.catchup]
    for part in parts:
        for name, value in vars(part).items():
            assert value is not pub, f"{type(part).__name__}.{name} is the publisher"
    assert pub.catchup.position is pub.position             # the one owner of next_seq
    assert all(v is pub.stats for v in (pub.session.stats, pub.readback.stats, pub.router.stats,
                                        pub.splitter.stats, pub.catchup.stats))
