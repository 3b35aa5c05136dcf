"""A frame holding events of several markets (Polymarket's initial dump) is
published as one message per event, each to its own market's subject, with
the Msg-Id ``<ring id>:<seq>:<j>`` and ``Capture-Part: j/k``; every other
frame exactly as before.  Real nats-server; the publisher wired the way
``python -m capture.publish`` wires it (in-process here, a child process for
the crash test)."""
from __future__ import annotations

import asyncio
import json
import threading
import time

import orjson

from conftest_nats import *  # noqa: F401,F403,E402
from conftest_nats import (Shard, disk_frames, head_seq, publisher_stats,  # noqa: E402
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


def expected_messages(frames: dict[int, tuple[int, bytes]], ring_id: str,
                      shard: int = 0) -> dict[str, tuple[str, bytes, str | None]]:
    """Msg-Id -> (subject, payload, Capture-Part) for every frame the ring
    got, by the rule (split frames per event, the rest whole)."""
    split = venues.fanout_fn("prod", VENUE)
    subject = venues.subject_fn("prod", VENUE, shard)
    out = {}
    for seq, (typ, raw) in frames.items():
        parts = split(raw) if typ == DATA else None
        if parts:
            for j, (s, b) in enumerate(parts, 1):
                out[f"{ring_id}:{seq}:{j}"] = (s, b, f"{j}/{len(parts)}")
        elif typ == DATA:
            out[f"{ring_id}:{seq}"] = (subject(raw) or f"prod.{VENUE}.unrouted", raw, None)
        else:       # control records (the ring's own, e.g. ring_full)
            out[f"{ring_id}:{seq}"] = (f"prod.{VENUE}.control.shard-{shard}", raw, None)
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


# -- crash in the middle of a split frame's acks ----------------------------------------------

BOOKS = 200       # per dump: large frames, so that the publisher spends its time inside one


class DumpLoad:
    """Writes initial dumps (BOOKS books across 50 markets) from a thread, at
    a rate; once ``mixed`` is set, a plain one-event frame every fifth."""

    def __init__(self, path: str, rate: float) -> None:
        self.path, self.rate = path, rate
        self.written: dict[int, tuple[int, bytes]] = {}
        self.mixed = threading.Event()
        self.stopped = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        try:
            with ring.Producer(self.path) as p:
                t0, i = time.monotonic(), 0
                while not self.stopped.is_set():
                    ahead = t0 + i / self.rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
                    plain = self.mixed.is_set() and i % 5 == 4
                    raw = orjson.dumps(book(i % 20, i, i) if plain else dump(BOOKS, 50, salt=i))
                    if p.write(raw, type=DATA) == ring.WriteStatus.OK:
                        self.written[p.last_seq] = (DATA, raw)
                        i += 1
                    else:
                        time.sleep(0.001)       # the flusher is behind: try again
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc
        finally:
            self.done.set()

    def stop(self) -> None:
        self.stopped.set()
        wait_for(self.done.is_set, 30, "the dump writer to stop")
        if self.error:
            raise self.error


async def _kill_inside_a_frame(s: Shard, url: str) -> None:
    """SIGKILL the publisher as soon as the stream's count says it stored
    part of a dump (only dumps are written so far: BOOKS messages each)."""
    import nats
    nc = await nats.connect(url)
    try:
        jsm = nc.jsm()
        while True:
            try:
                n = (await jsm.stream_info(STREAM)).state.messages
            except Exception:  # noqa: BLE001 - the stream is not created yet
                n = 0
            # Early in a frame: most of it is still to come when the kill lands.
            if BOOKS // 20 <= n % BOOKS <= BOOKS // 2:
                s.kill("publisher")
                return
            await asyncio.sleep(0.002)
    finally:
        await nc.close()


def _start_publisher(s: Shard):
    p = s._spawn("publisher", [
        "-m", "capture.publish", "--ring", s.ring_path, "--venue", VENUE, "--shard", str(s.shard),
        "--segments", s.data_dir, "--route", "venue", "--nats", json.dumps(s.nats_cfg),
        "--log-level", "INFO", "--window", "1024"])
    s.wait_attached("publisher")
    return p


def _partial_frames(msgs) -> list[int]:
    """Frames of which the stream holds some events but not all."""
    got: dict[int, set[int]] = {}
    k_of: dict[int, int] = {}
    for m in msgs:
        part = m.headers.get("Capture-Part")
        if part:
            j, k = map(int, part.split("/"))
            got.setdefault(m.seq, set()).add(j)
            k_of[m.seq] = k
    return sorted(s for s, js in got.items() if len(js) < k_of[s])


def _crash_mid_split(tmp_path, url: str, nats_cfg: dict, *, wait_out_window: float) -> dict:
    s = Shard(tmp_path / "shard", {"servers": [url], "prefix": "prod", **nats_cfg}, venue=VENUE)
    try:
        s.start_flusher()
        _start_publisher(s)
        load = DumpLoad(s.ring_path, rate=25)
        try:
            for _attempt in range(5):
                run_async(_kill_inside_a_frame(s, url))
                partial = _partial_frames(run_async(read_stream([url], STREAM)))
                if partial:
                    break
                _start_publisher(s)     # it finished the frame before the kill: again
            assert partial, "no kill landed between the acks of a split frame's events"
            # While it is down the ring laps its cursor: the restart resends the
            # rest of the partial frame from the segment files.
            load.mixed.set()
            wait_for(lambda: ring_lapped(s), 60, "the ring to lap the dead publisher")
        finally:
            load.stop()
        if wait_out_window:
            time.sleep(wait_out_window)     # the duplicate window runs out: nothing to wait on
        _start_publisher(s)
        wait_for(lambda: s.reader_seq("publisher") >= head_seq(s.ring_path), 120,
                 "the publisher to commit everything")
        assert s.stop("publisher") == 0, s.log("publisher")
        assert s.stop("flusher") == 0
        frames = disk_frames(s.data_dir, s.ring_id)
        assert set(load.written) <= set(frames)
        assert all(frames[q] == load.written[q] for q in load.written)   # disk: as received
        msgs = run_async(read_stream([url], STREAM))
        check_exactly_once(msgs, expected_messages(frames, s.ring_id, s.shard))
        st = publisher_stats(s.log("publisher"))
        assert st.get("lost", 0) == 0, st
        assert st.get("catchup_frames", 0) > 0, st
        return st
    finally:
        s.close()


def test_crash_between_a_split_frames_acks_then_restart(tmp_path, nats_server):
    """SIGKILL while a split frame is partly acknowledged; the restart (from
    the segment files: the ring lapped it meanwhile) resends the rest with
    the same ids and JetStream drops what was stored: every event once."""
    st = _crash_mid_split(tmp_path, nats_server.url, {}, wait_out_window=0)
    assert st.get("pipeline.duplicate_ack", 0) > 0, st   # the stored events, sent again


def test_crash_mid_split_then_restart_after_the_duplicate_window(tmp_path, nats_server):
    """The same, restarted after the duplicate window expired: the read-back
    of the stream finds the events stored under ``<ring>:<seq>:<j>`` and only
    the others are published."""
    st = _crash_mid_split(tmp_path, nats_server.url,
                          {"horizon": 2.0, "streams": {VENUE: {"duplicate_window": 3.0}}},
                          wait_out_window=3.5)
    assert st.get("startup_scan") == 1, st
    assert st.get("already_stored", 0) > 0, st
