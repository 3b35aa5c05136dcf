"""Fault scenario 5 with real processes: the flusher is SIGKILLed while writing, a
4 KiB page in the middle of its open segment is zeroed (what a power loss with
out-of-order writeback leaves), and the flusher restarts under load.  Only the
records on that page are lost, each named by a gap record; the frames before and
after the page, and everything written after the restart, are on disk once.
Prints its figures: frames lost against frames named in gap records."""
from __future__ import annotations

import os
import shutil
import signal
import tempfile

import orjson
import pytest

import flusher_helpers as H

import ring
from flusher.segments import tools as cli
from flusher.segments.format import gap_range
from flusher.segments.names import list_segments
from flusher.segments.read import read
from ring.frame import FrameType
from timing import timeout, wait_for

pytestmark = pytest.mark.faults


@pytest.fixture
def ring_path():
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    d = tempfile.mkdtemp(prefix="capture-damage-test-", dir=base)
    os.chmod(d, 0o700)
    yield os.path.join(d, "test.ring")
    shutil.rmtree(d, ignore_errors=True)


def _committed(ring_path: str) -> int:
    for r in ring.stats(ring_path)["readers"]:
        if r["name"] == "flusher":
            return r["next_seq"]
    return 0


def test_a_zeroed_page_in_the_open_segment_costs_only_its_records(ring_path, tmp_path):
    ring.create(ring_path, capacity=1 << 20)
    data = str(tmp_path / "data")
    os.mkdir(data)
    n, seed = 40_000, 51
    fl = H.start_flusher(ring_path, data, "--fsync", "never", "--segment-bytes", str(1 << 30))
    wait_for(lambda: any(r["name"] == "flusher" for r in ring.stats(ring_path)["readers"]), 30,
             "the flusher's tethered reader")
    prod = H.start_producer(ring_path, n, seed, rate_pause_every=50)
    try:
        wait_for(lambda: _committed(ring_path) > n // 3, 60, "a third of the frames on disk")
        fl.send_signal(signal.SIGKILL)
        fl.wait()
        (path,) = [p for p in list_segments(data) if p.endswith(".seg.open")]
        size = os.path.getsize(path)
        page = (size // 2) // 4096 * 4096
        with open(path, "r+b") as f:
            f.seek(page)
            f.write(b"\0" * 4096)
        fl = H.start_flusher(ring_path, data, "--fsync", "never", "--segment-bytes", str(1 << 30))
        assert prod.wait(timeout(120)) == 0
        fl.send_signal(signal.SIGTERM)
        _out, err = fl.communicate(timeout=timeout(120))
        assert fl.returncode == 0, err
        assert "event=segment_damaged" in err
    finally:
        for p in (fl, prod):
            if p.poll() is None:
                p.kill()
                p.wait()
    frames = list(read(data))
    seqs = [f.seq for f in frames]
    gaps = [(f.seq, gap_range(f.type, f.seq, f.payload)) for f in frames
            if f.type == FrameType.CONTROL and gap_range(f.type, f.seq, f.payload) is not None]
    assert len(gaps) == 1, gaps
    named = sum(last - first + 1 for first, last in gaps)
    # every sequence is a record or inside the gap record, once, in order
    covered = []
    for f in frames:
        last = gap_range(f.type, f.seq, f.payload)
        covered += range(f.seq, (last if last is not None else f.seq) + 1)
    assert covered == list(range(covered[-1] + 1)), "a sequence missing or twice"
    assert seqs == sorted(set(seqs))
    # the data: in order, once; the ones missing are exactly as many as the lost
    # records that were data (drop records, if the ring filled, are records too)
    bodies = [f.payload for f in frames if f.type == FrameType.DATA]
    ids = [int(p.split(b",")[0][5:]) for p in bodies]
    assert ids == sorted(set(ids)) and ids[-1] == n - 1
    assert all(p == H.payload(i, seed) for i, p in zip(ids, bodies)), "a payload differs"
    missing = n - len(ids)
    first, last = gaps[0]
    # the lost data frames are contiguous, right where the gap record stands
    k = seqs.index(first)
    before = [f for f in frames[:k] if f.type == FrameType.DATA]
    after = [f for f in frames[k + 1:] if f.type == FrameType.DATA]
    lost_ids = set(range(n)) - set(ids)
    assert lost_ids == set(range(int(before[-1].payload.split(b",")[0][5:]) + 1,
                                 int(after[0].payload.split(b",")[0][5:])))
    assert 0 < missing <= named <= 4096 // 32 + 2
    body = orjson.loads(next(f.payload for f in frames if f.seq == first))
    assert body["offset"] <= page + 4096 and body["offset"] + body["bytes"] >= page
    print(f"\nscenario 5: {len(frames)} records on disk, {named} frames named by {len(gaps)} gap "
          f"record(s), {missing} data frames lost (of {n}); zeroed page at byte {page} of {size}")
    assert cli.main(["verify", "-q", data]) == 0


def test_a_zeroed_header_of_the_open_segment_costs_nothing(ring_path, tmp_path):
    """The flusher is SIGKILLed and its open segment's file header zeroed: on
    restart the header is rebuilt from checks (the name, the closed segment
    before it), every record is kept and nothing is written twice."""
    ring.create(ring_path, capacity=1 << 20)
    data = str(tmp_path / "data")
    os.mkdir(data)
    n, seed = 20_000, 52
    args = ("--fsync", "never", "--segment-bytes", str(1 << 20))
    fl = H.start_flusher(ring_path, data, *args)
    wait_for(lambda: any(r["name"] == "flusher" for r in ring.stats(ring_path)["readers"]), 30,
             "the flusher's tethered reader")
    prod = H.start_producer(ring_path, n, seed, rate_pause_every=50)
    try:
        wait_for(lambda: _committed(ring_path) > n // 3
                 and any(p.endswith(".seg") for p in list_segments(data)), 60,
                 "a third of the frames on disk, a segment closed")
        fl.send_signal(signal.SIGKILL)
        fl.wait()
        (path,) = [p for p in list_segments(data) if p.endswith(".seg.open")]
        with open(path, "r+b") as f:
            f.write(b"\0" * 256)
        fl = H.start_flusher(ring_path, data, *args)
        assert prod.wait(timeout(120)) == 0
        fl.send_signal(signal.SIGTERM)
        _out, err = fl.communicate(timeout=timeout(120))
        assert fl.returncode == 0, err
        assert "event=segment_header_damaged" in err and path in err
    finally:
        for p in (fl, prod):
            if p.poll() is None:
                p.kill()
                p.wait()
    H.assert_exactly_once(data, n, seed)
    assert not [p for p in os.listdir(os.path.dirname(path)) if ".corrupt" in p]
    assert cli.main(["verify", "-q", data]) == 0
