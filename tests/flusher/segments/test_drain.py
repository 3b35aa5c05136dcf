"""The flusher process against a real ring and a producer process.

Every test synchronises on events (frames committed, files present, a
process exited) polled with a deadline from tests/timing.py; no sleeps as
synchronisation and no timing thresholds.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import pytest

import flusher_helpers as H  # noqa: E402

import ring  # noqa: E402
from ring.frame import FrameType  # noqa: E402
from flusher.segments import tools as cli  # noqa: E402
from flusher.segments.drain import EXIT_OK, Flusher, FlusherConfig  # noqa: E402
from flusher.segments.read import read as read_frames  # noqa: E402
from flusher.segments.names import list_segments  # noqa: E402
from timing import timeout, wait_for  # noqa: E402

HOUR_NS = 3600 * 10**9


@pytest.fixture
def ring_path():
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    d = tempfile.mkdtemp(prefix="capture-flusher-test-", dir=base)
    os.chmod(d, 0o700)
    yield os.path.join(d, "test.ring")
    shutil.rmtree(d, ignore_errors=True)


def _reader_info(ring_path: str, name: str = "flusher") -> dict | None:
    for r in ring.stats(ring_path)["readers"]:
        if r["name"] == name:
            return r
    return None


def _committed(ring_path: str) -> int:
    r = _reader_info(ring_path)
    return r["next_seq"] if r else 0


def _corrupt_files(d: str) -> list[str]:
    return [os.path.join(p, f) for p, _, fs in os.walk(d) for f in fs if ".corrupt" in f]


class FakeClock:
    def __init__(self, t: int) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


class FlusherThread:
    """An in-process flusher (so a test can inject a clock and read counters)."""

    def __init__(self, cfg: FlusherConfig) -> None:
        self.fl = Flusher(cfg)
        self.rc: int | None = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        self.rc = self.fl.run()

    def stop(self) -> int:
        self.fl.stop()
        self.t.join(timeout(60))
        assert not self.t.is_alive(), "flusher did not finish its drain"
        return self.rc


# -- end to end: exactly once, byte for byte, across size and hour rotations -----------------
def test_end_to_end_exactly_once_across_rotations(ring_path, tmp_path):
    ring.create(ring_path, capacity=1 << 20)
    data = str(tmp_path / "data")
    os.mkdir(data)
    # 23:59:59 UTC: the hour boundary is also a day boundary
    clock = FakeClock(1_800_057_599 * 10**9)
    cfg = FlusherConfig(ring=ring_path, data_dir=data, venue="test", shard=0,
                        segment_bytes=256 << 10, index_every=64, clock=clock,
                        drain_timeout=timeout(60))
    ft = FlusherThread(cfg)
    n, seed = 12_000, 11
    prod = H.start_producer(ring_path, n, seed, big=True)
    wait_for(lambda: ft.fl.stats.frames >= n // 2 or prod.poll() is not None, 60, "half the frames on disk")
    clock.t += 2 * 10**9                     # 00:00:01 the next day
    assert prod.wait(timeout(60)) == 0
    assert ft.stop() == EXIT_OK
    H.assert_exactly_once(data, n, seed, big=True)
    segs = list_segments(data)
    days = sorted({os.path.basename(os.path.dirname(p)) for p in segs})
    assert days == ["2027-01-15", "2027-01-16"]
    assert len(segs) >= 4 and all(p.endswith(".seg") for p in segs)
    # size rotation: no segment beyond the limit unless it holds one frame
    meta = H.records_on_disk(data)
    for i, p in enumerate(segs):
        recs = int((meta["file"] == i).sum())
        assert os.path.getsize(p) <= cfg.segment_bytes or recs == 1
    # byte for byte: each record on disk is the ring frame with its CRC intact
    assert cli.main(["verify", "-q", data]) == 0
    assert _committed(ring_path) == int(meta["seq"][-1]) + 1


def test_backlogs_are_written_first_across_size_rotations(ring_path, tmp_path):
    """Backlogs of most of the ring, segments of 200 KiB: batches end at the
    segment's room (a checkpoint within it, or a frame walked first), the
    ring's end and max_bytes; every frame lands once, byte for byte."""
    ring.create(ring_path, capacity=1 << 20)
    data = str(tmp_path / "data")
    os.mkdir(data)
    cfg = FlusherConfig(ring=ring_path, data_dir=data, venue="test", shard=0, segment_bytes=200 << 10,
                        max_bytes=300 << 10, index_every=16, rotate_hourly=False)
    fl = Flusher(cfg)
    ways = []
    write = fl.drain.write

    def spy(*a, **k):
        r = write(*a, **k)
        ways.append(r.written_first)
        return r

    fl.drain.write = spy
    p = ring.Producer(ring_path)
    n, seed = 0, 5
    for burst in range(8):
        start = n
        while n < start + 2000 and p.write(H.payload(n, seed)) == ring.WriteStatus.OK:
            n += 1
        while fl.step():
            pass
    fl.close()
    p.close()
    assert any(ways) and not all(ways)
    H.assert_exactly_once(data, n, seed)
    segs = list_segments(data)
    meta = H.records_on_disk(data)
    assert len(segs) >= 10
    for i, path in enumerate(segs):
        assert os.path.getsize(path) <= cfg.segment_bytes or int((meta["file"] == i).sum()) == 1
    assert cli.main(["verify", "-q", data]) == 0


# -- kill -9 at random moments under load ---------------------------------------------------
def _kill_loop(ring_path, tmp_path, iterations: int, n: int, seed: int) -> None:
    ring.create(ring_path, capacity=1 << 20)
    data = str(tmp_path / "data")
    os.mkdir(data)
    args = ["--segment-bytes", str(64 << 10), "--drain-timeout", str(timeout(60))]
    rnd = random.Random(seed)
    logs: list[str] = []
    fl = H.start_flusher(ring_path, data, *args)
    wait_for(lambda: _reader_info(ring_path) is not None, 30, "the flusher's reader")
    prod = H.start_producer(ring_path, n, seed, big=True, rate_pause_every=50)
    try:
        for k in range(iterations):
            before = _committed(ring_path)
            wait_for(lambda: _committed(ring_path) > before or prod.poll() is not None
                     or fl.poll() is not None, 30, f"progress of flusher run {k}")
            assert fl.poll() is None, f"flusher exited with {fl.returncode}: {fl.stderr.read()}"
            # a random moment: while writing, between write and commit, rotating...
            threading.Event().wait(rnd.uniform(0, 0.05))
            fl.kill()
            _o, err = fl.communicate()
            logs.append(err)
            fl = H.start_flusher(ring_path, data, *args)
        assert prod.wait(timeout(120)) == 0
        wait_for(lambda: _committed(ring_path) > 0, 30, "the restarted flusher")
        fl.send_signal(signal.SIGTERM)
        _out, err = fl.communicate(timeout=timeout(60))
        logs.append(err)
        assert fl.returncode == EXIT_OK, err
    finally:
        for p in (fl, prod):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert not _corrupt_files(data)
    H.assert_exactly_once(data, n, seed, big=True)
    assert cli.main(["verify", "-q", data]) == 0
    assert _reader_info(ring_path)["lag_frames"] == 0
    if os.environ.get("CAPTURE_TEST_VERBOSE"):
        print("".join(logs))


def test_kill9_loop_short(ring_path, tmp_path):
    _kill_loop(ring_path, tmp_path, iterations=5, n=25_000, seed=21)


def test_kill9_loop_20(ring_path, tmp_path):
    # >= 20 kills; about 10 s here, so it runs with every `make test`
    _kill_loop(ring_path, tmp_path, iterations=22, n=120_000, seed=22)


@pytest.mark.slow
def test_kill9_soak(ring_path, tmp_path):
    _kill_loop(ring_path, tmp_path, iterations=100, n=600_000, seed=23)


# -- torn tail and mid-file corruption, through a flusher restart ------------------------------
def _crash_with_uncommitted_tail(ring_path, data, clock):
    """Frames 0..99 written and committed, 100..179 written but not committed,
    then the process 'dies' (descriptors closed, nothing finished)."""
    ring.create(ring_path, capacity=1 << 20)
    cfg = FlusherConfig(ring=ring_path, data_dir=data, venue="test", shard=0, clock=clock,
                        index_every=16, drain_timeout=timeout(10))
    fl = Flusher(cfg)
    p = ring.Producer(ring_path)
    for i in range(100):
        assert p.write(H.payload(i, 5)) == ring.WriteStatus.OK
    while fl.step():
        pass
    for i in range(100, 180):
        assert p.write(H.payload(i, 5)) == ring.WriteStatus.OK
    assert fl._write_available() == 80   # written, not committed: then the crash
    path = fl.seg.path
    fl.seg.abandon()
    fl.rd.close()
    return cfg, p, path


@pytest.mark.parametrize("how", ["truncate_mid_record", "zero_last_4k", "flip_last_record"])
def test_restart_after_torn_tail(ring_path, tmp_path, how, capsys):
    data = str(tmp_path)
    cfg, p, path = _crash_with_uncommitted_tail(ring_path, data, FakeClock(H.BASE_NS))
    size = os.path.getsize(path)
    meta = H.records_on_disk(data)
    last_off = int(meta["offset"][-1])
    with open(path, "r+b") as f:
        if how == "truncate_mid_record":
            f.truncate(last_off + 20)
        elif how == "zero_last_4k":
            f.seek(size - 4096)
            f.write(b"\0" * 4096)
        else:
            f.seek(last_off + 40)
            f.write(b"\xff\xff")
    assert cli.main(["verify", data]) == 0
    assert "torn_tail" in capsys.readouterr().out
    fl = Flusher(cfg)
    assert fl.stats.torn_tails == 1 and fl.stats.corrupt_segments == 0
    on_disk = fl.skip_through
    assert on_disk is not None and 100 <= on_disk < 179
    while fl.step():
        pass
    fl.close()
    p.close()
    # frames 100..on_disk were already on disk: committed, not written again
    assert fl.stats.skipped_frames == on_disk + 1 - 100
    assert fl.stats.frames == 179 - on_disk
    assert not _corrupt_files(data)
    H.assert_exactly_once(data, 180, 5)
    assert cli.main(["verify", "-q", data]) == 0


def test_restart_after_mid_file_corruption(ring_path, tmp_path, caplog, capsys):
    data = str(tmp_path)
    cfg, p, path = _crash_with_uncommitted_tail(ring_path, data, FakeClock(H.BASE_NS))
    meta = H.records_on_disk(data)
    mid = int(meta["offset"][50])
    with open(path, "r+b") as f:
        f.seek(mid + 33)
        b = f.read(1)
        f.seek(mid + 33)
        f.write(bytes([b[0] ^ 0x01]))
    assert cli.main(["verify", data]) == 1
    assert f"at offset {mid}" in capsys.readouterr().out
    with caplog.at_level(logging.ERROR, logger="capture.flusher"):
        fl = Flusher(cfg)
    # the damaged record is the only loss: the segment is rebuilt around a gap record
    assert fl.stats.repaired_segments == 1 and fl.stats.corrupt_segments == 0
    assert (fl.stats.damaged_regions, fl.stats.damaged_frames) == (1, 1)
    assert any(getattr(r, "event", None) == "segment_damaged" and r.kv["path"] == path for r in caplog.records)
    assert not _corrupt_files(data)
    assert fl.skip_through == 179          # 100..179 were written before the crash: on disk
    while fl.step():
        pass
    fl.close()
    p.close()
    meta = H.records_on_disk(data)
    assert meta["seq"].tolist() == list(range(180))
    assert [int(t) for t in meta["type"]].count(int(FrameType.CONTROL)) == 1
    want = [H.payload(i, 5) for i in range(180) if i != 50]
    assert H.data_payloads_on_disk(data) == want
    assert cli.main(["verify", data]) == 0
    assert "gap_record" in capsys.readouterr().out


# -- disk full ---------------------------------------------------------------------------------
@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("disk-full test needs root to mount a 4 MiB tmpfs")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needed to fill a disk): {r.stderr.strip()}")
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _move_closed(src: str, dst: str) -> int:
    """Move closed segments (and their indexes) off the full filesystem."""
    moved = 0
    for p in list_segments(src, include_open=False):
        rel = os.path.relpath(p, src)
        os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
        shutil.copyfile(p, os.path.join(dst, rel))
        os.unlink(p)
        idx = p[:-4] + ".idx"
        if os.path.exists(idx):
            os.unlink(idx)
        moved += 1
    return moved


def test_disk_full_keeps_frames_in_ring_and_resumes(ring_path, tmp_path, small_fs):
    ring.create(ring_path, capacity=1 << 20)
    saved = str(tmp_path / "saved")
    cfg = FlusherConfig(ring=ring_path, data_dir=small_fs, venue="test", shard=0,
                        segment_bytes=1 << 20, backoff_max=0.02, drain_timeout=timeout(60))
    ft = FlusherThread(cfg)
    n, seed = 40_000, 31          # about 10 MiB: the 4 MiB filesystem fills more than once
    prod = H.start_producer(ring_path, n, seed)
    fulls = 0
    try:
        while True:
            seen = ft.fl.stats.write_errors
            wait_for(lambda: ft.fl.stats.write_errors > seen or prod.poll() is not None,
                     60, "the disk to fill or the producer to finish")
            if ft.fl.stats.write_errors == seen:
                break
            fulls += 1
            # full: nothing corrupt, the frames it could not write are still in the ring
            assert not _corrupt_files(small_fs)
            assert _reader_info(ring_path)["lag_frames"] > 0
            assert "No space left" in ft.fl.stats.last_error or "ENOSPC" in ft.fl.stats.last_error
            assert _move_closed(small_fs, saved) > 0
        assert prod.wait(timeout(60)) == 0
        assert ft.stop() == EXIT_OK
    finally:
        if prod.poll() is None:
            prod.kill()
    assert fulls >= 1
    _move_closed(small_fs, saved)
    assert not _corrupt_files(small_fs) and not list_segments(small_fs)
    H.assert_exactly_once(saved, n, seed)
    assert cli.main(["verify", "-q", saved]) == 0


# -- SIGTERM under load --------------------------------------------------------------------------
def test_sigterm_drains_then_exits_0(ring_path, tmp_path):
    ring.create(ring_path, capacity=1 << 20)
    data = str(tmp_path / "data")
    os.mkdir(data)
    fl = H.start_flusher(ring_path, data, "--segment-bytes", str(1 << 20),
                         "--drain-timeout", str(timeout(60)))
    wait_for(lambda: _reader_info(ring_path) is not None, 30, "the flusher's reader")
    n, seed = 20_000, 41
    prod = H.start_producer(ring_path, n, seed, rate_pause_every=20)
    try:
        wait_for(lambda: _committed(ring_path) > 100, 30, "the flusher under load")
        fl.send_signal(signal.SIGTERM)
        _out, err = fl.communicate(timeout=timeout(120))
        assert fl.returncode == EXIT_OK, err
        assert prod.poll() == 0, "the flusher must drain until the producer stops"
    finally:
        for p in (fl, prod):
            if p.poll() is None:
                p.kill()
                p.wait()
    r = _reader_info(ring_path)
    assert r["lag_frames"] == 0 and r["lag_bytes"] == 0
    H.assert_exactly_once(data, n, seed)
    assert not [p for p in os.listdir(data) if p.endswith(".open")]
    assert all(p.endswith(".seg") for p in list_segments(data))


# -- fsync failure under fsync=always ----------------------------------------------------------
def test_failed_fsync_under_always_writes_again_from_ring(ring_path, tmp_path, monkeypatch, caplog):
    ring.create(ring_path, capacity=1 << 20)
    data = str(tmp_path)
    cfg = FlusherConfig(ring=ring_path, data_dir=data, venue="test", shard=0, fsync="always",
                        backoff_initial=0.001, clock=FakeClock(H.BASE_NS))
    fl = Flusher(cfg)
    p = ring.Producer(ring_path)
    for i in range(50):
        p.write(H.payload(i, 7))
    while fl.step():
        pass
    for i in range(50, 90):
        p.write(H.payload(i, 7))
    real_fsync = os.fsync
    seg_fd = fl.seg._fd
    fails = [1]

    def flaky_fsync(fd):
        if fd == seg_fd and fails[0]:
            fails[0] -= 1
            raise OSError(5, "Input/output error")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", flaky_fsync)
    with caplog.at_level(logging.ERROR, logger="capture.flusher"):
        assert fl.step() == -1                  # not committed: written again
    assert fl.stats.fsync_errors == 1
    assert _committed(ring_path) == 50
    assert any(getattr(r, "event", None) == "fsync_rollback" and "cut back" in r.getMessage()
               for r in caplog.records)
    while fl.step():
        pass
    fl.close()
    p.close()
    H.assert_exactly_once(data, 90, 7)
    assert _committed(ring_path) == 90
    assert cli.main(["verify", "-q", data]) == 0


# -- a batch that runs exactly to the ring's end and on from its start ------------------------------
def test_batch_across_the_ring_end_on_a_frame_boundary(ring_path, tmp_path):
    ring.create(ring_path, capacity=64 << 10)
    data = str(tmp_path)
    cfg = FlusherConfig(ring=ring_path, data_dir=data, venue="test", shard=0, clock=FakeClock(H.BASE_NS))
    fl = Flusher(cfg)
    p = ring.Producer(ring_path)
    body = [b"%06d" % i + b"x" * 218 for i in range(300)]     # 32 + 224 = 256 bytes per frame
    for i in range(200):
        assert p.write(body[i]) == ring.WriteStatus.OK
    assert fl.step() == 200
    for i in range(200, 300):                 # 56 frames to the end, 44 from the start
        assert p.write(body[i]) == ring.WriteStatus.OK
    assert fl.step() == 100
    fl.close()
    p.close()
    assert [f.payload for f in H_read(data)] == body


def H_read(d):
    from flusher.segments.read import read
    return list(read(d))


# -- drain timeout, compression, status file ---------------------------------------------------------
def test_drain_timeout_compression_and_status(ring_path, tmp_path):
    ring.create(ring_path, capacity=1 << 20)
    data = str(tmp_path)
    cfg = FlusherConfig(ring=ring_path, data_dir=data, venue="test", shard=0, segment_bytes=64 << 10,
                        compress=True, drain_timeout=0.05, clock=FakeClock(H.BASE_NS))
    ft = FlusherThread(cfg)
    p = ring.Producer(ring_path)             # stays open: the producer never stops
    for i in range(2000):
        while p.write(H.payload(i, 9)) != ring.WriteStatus.OK:
            wait_for(lambda: p.room() > 0, 10, "room in the ring")
    wait_for(lambda: _committed(ring_path) >= 2000, 30, "everything committed")
    wait_for(lambda: any(f.endswith(".seg.zst") for _, _, fs in os.walk(data) for f in fs),
             30, "a compressed segment")
    rc = ft.stop()
    assert rc == 75                          # drain timeout: the producer was still running
    p.close()
    H.assert_exactly_once(data, 2000, 9)
    assert cli.main(["verify", "-q", data]) == 0
    import json
    st = json.load(open(os.path.join(data, "test", "shard-0", "flusher.status.json")))
    assert st["state"] == "stopped" and st["frames"] == ft.fl.stats.frames and st["last_seq"] >= 1999
    assert st["segments_closed"] >= 2 and st["fsync_policy"] == "interval"


def test_restart_finds_newest_sequences_even_if_the_clock_stepped_back(ring_path, tmp_path):
    ring.create(ring_path, capacity=1 << 20)
    data = str(tmp_path)
    clock = FakeClock(H.BASE_NS + 10 * 10**9)
    cfg = FlusherConfig(ring=ring_path, data_dir=data, venue="test", shard=0, clock=clock)
    fl = Flusher(cfg)
    p = ring.Producer(ring_path)
    for i in range(30):
        p.write(H.payload(i, 3))
    while fl.step():
        pass
    fl._close_segment()
    clock.t -= 5 * 10**9                      # NTP stepped the clock back
    for i in range(30, 60):
        p.write(H.payload(i, 3))
    assert fl._write_available() == 30        # written, then a crash before the commit
    fl._close_segment()
    fl.rd.close()
    fl = Flusher(cfg)
    assert fl.skip_through == 59
    while fl.step():
        pass
    fl.close()
    p.close()
    assert fl.stats.skipped_frames == 30 and fl.stats.frames == 0
    seqs = sorted(H.records_on_disk(data)["seq"].tolist())
    assert seqs == list(range(60))


def test_a_crash_before_the_padding_is_cut_leaves_a_torn_tail_only(ring_path, tmp_path):
    """A backlog across the ring's end is written with the padding before the
    end, which is then truncated off.  A crash in between leaves the padding
    as the segment's tail: recovery cuts it like any torn tail, and the
    frames after it are written once on restart."""
    cap = 1 << 20
    ring.create(ring_path, capacity=cap)
    data = str(tmp_path)
    cfg = FlusherConfig(ring=ring_path, data_dir=data, venue="test", shard=0, clock=FakeClock(H.BASE_NS))
    fl = Flusher(cfg)
    p = ring.Producer(ring_path)
    body = [b"%06d" % i + b"y" * 994 for i in range(2000)]     # 1032-byte frames
    n = 0
    while n < 900:                            # up to ~100 KiB before the ring's end
        assert p.write(body[n]) == ring.WriteStatus.OK
        n += 1
    while fl.step():
        pass
    left = cap - (fl.rd.position % cap)
    assert 64 << 10 <= left < 200 << 10          # enough to be written first
    before_end = n + left // 1032             # frames that still fit before the end
    while n < before_end + 50:                # the rest goes after the end, behind padding
        assert p.write(body[n]) == ring.WriteStatus.OK
        n += 1
    pad_at = fl.rd.position + (before_end - fl.rd.next_seq) * 1032
    # one batch up to the ring's end: written, padding and all, then cut
    assert fl._write_available() == before_end - 900
    # the crash: put the padding back as the tail, as if the truncate had not
    # happened yet, and die without committing
    seg = fl.seg
    size = os.path.getsize(seg.path)
    mm = fl.rd._rf.mm
    pad = bytes(mm[4096 + (pad_at % cap):4096 + cap])
    assert pad[24] == ring.FrameType.PADDING and len(pad) == cap - (pad_at % cap)
    with open(seg.path, "r+b") as f:
        f.seek(size)
        f.write(pad)
    seg.abandon()
    fl.rd.close()
    fl = Flusher(cfg)
    assert fl.recovery.truncated and not fl.recovery.corrupt and fl.stats.torn_tails == 1
    while fl.step():
        pass
    fl.close()
    p.close()
    got = [f.payload for f in read_frames(data) if f.type == 1]
    assert got == body[:n]
    assert cli.main(["verify", "-q", data]) == 0


def test_idle_segment_is_closed_at_the_hour(ring_path, tmp_path):
    ring.create(ring_path, capacity=1 << 20)
    data = str(tmp_path)
    clock = FakeClock(H.BASE_NS + HOUR_NS - 10**9)       # 08:59:59
    fl = Flusher(FlusherConfig(ring=ring_path, data_dir=data, venue="test", shard=0, clock=clock))
    p = ring.Producer(ring_path)
    for i in range(10):
        p.write(H.payload(i, 1))
    while fl.step():
        pass
    assert fl.seg is not None and fl.seg.path.endswith(".seg.open")
    clock.t += 2 * 10**9                                  # 09:00:01, and nothing arrives
    fl._idle()
    assert fl.seg is None
    segs = list_segments(data)
    assert len(segs) == 1 and segs[0].endswith("T085959Z-00000000000000000000.seg")
    p.write(H.payload(10, 1))
    while fl.step():
        pass
    assert os.path.basename(fl.seg.path).startswith("test-0-20270115T090001Z-00000000000000000010")
    fl.close()
    p.close()


def test_start_without_data_dir_is_a_clear_error(tmp_path):
    import subprocess
    import sys as _sys
    ringp = tmp_path / "r.ring"
    import ring as _ring
    _ring.create(str(ringp), 1 << 16).close()
    r = subprocess.run([_sys.executable, "-m", "flusher.segments.drain", "--ring", str(ringp), "--data-dir",
                        str(tmp_path / "missing"), "--venue", "v", "--shard", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "cannot start" in r.stderr and "missing" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("key,value", [("fsync", "sometimes"), ("segment_bytes", 100),
                                       ("max_bytes", 0), ("index_every", 0)])
def test_a_setting_out_of_range_is_a_config_error_naming_it(tmp_path, key, value):
    from common.errors import ConfigError
    with pytest.raises(ConfigError) as ei:
        FlusherConfig(ring="r", data_dir=str(tmp_path), venue="v", shard=0, **{key: value})
    assert ei.value.key == key and str(value) in str(ei.value)


def test_a_bad_setting_on_the_command_line_is_a_clear_error(tmp_path):
    ringp = tmp_path / "r.ring"
    ring.create(str(ringp), 1 << 16).close()
    r = subprocess.run([sys.executable, "-m", "flusher.segments.drain", "--ring", str(ringp), "--data-dir",
                        str(tmp_path), "--venue", "v", "--shard", "0", "--max-bytes", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "cannot start" in r.stderr and "max_bytes" in r.stderr and "Traceback" not in r.stderr
