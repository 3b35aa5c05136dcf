"""A flusher that cannot start or cannot create a segment waits and retries; it never
exits into the supervisor's restart limit, and what the ring refused meanwhile ends
up on disk as a drop record.  Real filesystems (a small tmpfs, remounted read-only
or filled), real symlinks, a real process for the signal case.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import tempfile
import threading

import orjson
import pytest

import flusher_helpers as H

import ring
from common.status import read_status
from flusher.segments import tools as cli
from flusher.segments.drain import EXIT_DRAIN_TIMEOUT, EXIT_OK, Flusher, FlusherConfig
from flusher.segments.index import index_path_for
from flusher.segments.names import day_dir_name, list_segments
from flusher.segments.read import read
from ring.frame import FrameType
from timing import timeout, wait_for


@pytest.fixture
def ring_path():
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    d = tempfile.mkdtemp(prefix="capture-start-test-", dir=base)
    os.chmod(d, 0o700)
    yield os.path.join(d, "test.ring")
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a small tmpfs")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _remount(mnt: str, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", mnt], check=True)


class Starting:
    """A Flusher constructed in a thread: its start may wait for the disk."""

    def __init__(self, cfg: FlusherConfig, reader=None) -> None:
        self.fl: Flusher | None = None
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, args=(cfg, reader), daemon=True)
        self.t.start()

    def _run(self, cfg: FlusherConfig, reader) -> None:
        try:
            self.fl = Flusher(cfg, reader, stop=self.stop)
        except BaseException as exc:      # reported by the test
            self.error = exc

    def join(self) -> Flusher:
        self.t.join(timeout(30))
        assert not self.t.is_alive(), "the start did not finish"
        assert self.error is None, self.error
        return self.fl


def _cfg(ring_path, data, status, **kw) -> FlusherConfig:
    return FlusherConfig(ring=ring_path, data_dir=data, venue="test", shard=0, status_path=status,
                         backoff_initial=0.005, backoff_max=0.05, drain_timeout=timeout(10),
                         index_every=16, **kw)


def _blocked(status: str, *words: str):
    st = read_status(status)
    return st if st and st.get("state") == "start_blocked" and all(w in st["last_error"] for w in words) \
        else None


def _drain(fl: Flusher) -> None:
    while fl.step():
        pass


def test_read_only_data_dir_waits_and_names_the_full_path(ring_path, tmp_path, tmpfs):
    ring.create(ring_path, capacity=1 << 20)
    status = str(tmp_path / "flusher.json")
    _remount(tmpfs, "ro")
    try:
        s = Starting(_cfg(ring_path, tmpfs, status))
        st = wait_for(lambda: _blocked(status, "EROFS", os.path.join(tmpfs, "test")), 20,
                      "the start to wait on a read-only data dir, naming the full path")
        assert st["start_retries"] >= 1
        wait_for(lambda: (read_status(status) or {}).get("start_retries", 0) >= 3, 20, "retries")
        assert s.t.is_alive()                     # waiting, not exiting
    finally:
        _remount(tmpfs, "rw")
    fl = s.join()
    assert fl.started and fl.stats.start_retries >= 3
    with ring.Producer(ring_path) as p:
        for i in range(50):
            assert p.write(H.payload(i, 1)) == ring.WriteStatus.OK
    _drain(fl)
    fl.close()
    assert [f.payload for f in read(tmpfs) if f.type == FrameType.DATA] == [H.payload(i, 1) for i in range(50)]


def test_disk_full_at_start_then_every_refused_frame_is_a_record(ring_path, tmp_path, tmpfs):
    """Scenario 3: recovery needs room (a damaged open segment is rebuilt) and the disk
    is full.  The flusher waits; the ring fills and refuses frames; once space is freed
    the flusher starts, drains, and the producer's drop record lands with the count."""
    ring.create(ring_path, capacity=1 << 16)
    frames = H.frames_of([H.payload(i, 2) for i in range(400)], first_seq=0)
    path, _ = H.write_segment(tmpfs, frames, close=False, ring_id=b"X" * 16)
    with open(path, "r+b") as f:                  # a damaged page mid-segment
        f.seek(16384)
        f.write(b"\0" * 4096)
    filler = os.path.join(tmpfs, "filler")
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\1" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    status = str(tmp_path / "flusher.json")
    s = Starting(_cfg(ring_path, tmpfs, status))
    wait_for(lambda: _blocked(status, "ENOSPC", path), 20, "the start to wait on a full disk")
    refused = ok = 0
    with ring.Producer(ring_path) as p:
        for i in range(2000):
            r = p.write(H.payload(i, 3))
            if r == ring.WriteStatus.OK:
                ok += 1
            else:
                assert r == ring.WriteStatus.FULL
                refused += 1
        assert refused > 0 and ok > 0
        os.unlink(filler)                         # space returns
        fl = s.join()
        assert fl.started and fl.stats.start_retries >= 1 and fl.stats.repaired_segments == 1
        _drain(fl)
        p.poll()                                  # room again: the pending drop record is written
        assert p.pending_gap == 0
    _drain(fl)
    fl.close()
    drops = [orjson.loads(f.payload) for f in read(tmpfs)
             if f.type == FrameType.CONTROL and b'"drop"' in f.payload]
    assert sum(d["count"] for d in drops) == refused
    data = [f.payload for f in read(tmpfs) if f.type == FrameType.DATA and b'"s":3}' in f.payload[:24]]
    assert data == [H.payload(i, 3) for i in range(ok)]
    assert cli.main(["verify", "-q", tmpfs]) == 0


@pytest.mark.parametrize("plant", ["symlink", "file"])
def test_unsafe_shard_dir_at_start_waits(ring_path, tmp_path, plant):
    ring.create(ring_path, capacity=1 << 20)
    data = str(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.makedirs(os.path.join(data, "test"))
    shard = os.path.join(data, "test", "shard-0")
    if plant == "symlink":
        os.symlink(elsewhere, shard)
    else:
        open(shard, "w").close()
    status = str(tmp_path / "flusher.json")
    rd = ring.Reader(ring_path, "flusher", tethered=True, max_frames=64)
    s = Starting(_cfg(ring_path, data, status), rd)
    wait_for(lambda: _blocked(status, shard, "symlink or not a directory"), 20, "the start to wait")
    assert s.t.is_alive()
    # waiting on purpose, not hung: the heartbeat the supervisor's watchdog follows moves on
    beat = rd.info().heartbeat_ns
    wait_for(lambda: rd.info().heartbeat_ns > beat, 20, "the heartbeat to advance while waiting")
    os.unlink(shard)
    fl = s.join()
    with ring.Producer(ring_path) as p:
        assert p.write(b'{"x":1}') == ring.WriteStatus.OK
    _drain(fl)
    fl.close()
    assert os.listdir(elsewhere) == []
    assert [f.payload for f in read(data) if f.type == FrameType.DATA] == [b'{"x":1}']


@pytest.mark.parametrize("plant", ["symlink_day_dir", "file_day_dir", "symlink_segment"])
def test_unsafe_segment_path_holds_only_those_writes(ring_path, tmp_path, plant):
    """Scenario 9: a non-directory or symlink at the next segment's path is refused and
    retried; nothing is written through it; the flusher stays up and writes once it goes."""
    ring.create(ring_path, capacity=1 << 20)
    data = str(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.mkdir(data)
    status = str(tmp_path / "flusher.json")
    fl = Flusher(_cfg(ring_path, data, status, clock=lambda: H.BASE_NS))
    day = os.path.join(data, "test", "shard-0", day_dir_name(H.BASE_NS))
    if plant == "symlink_day_dir":
        os.symlink(elsewhere, day)
        victim = day
    elif plant == "file_day_dir":
        open(day, "w").close()
        victim = day
    else:
        os.mkdir(day)
        victim = os.path.join(day, "test-0-20270115T080000Z-00000000000000000000.seg.open")
        os.symlink(elsewhere / "target", victim)
    with ring.Producer(ring_path) as p:
        for i in range(20):
            assert p.write(H.payload(i, 4)) == ring.WriteStatus.OK
    done = threading.Event()
    t = threading.Thread(target=lambda: (_drain(fl), done.set()), daemon=True)
    t.start()
    wait_for(lambda: fl.stats.unsafe_paths >= 3, 20, "the refused path to be retried")
    assert not done.is_set() and fl.stats.state == "io_error"
    assert victim in fl.stats.last_error
    assert os.listdir(elsewhere) == []            # nothing through the symlink
    os.unlink(victim)
    assert done.wait(timeout(20))
    fl.close()
    assert [f.payload for f in read(data) if f.type == FrameType.DATA] == [H.payload(i, 4) for i in range(20)]


def test_the_flusher_process_stays_up_while_its_start_waits_and_stops_on_sigterm(ring_path, tmp_path):
    ring.create(ring_path, capacity=1 << 20)
    data = str(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.makedirs(os.path.join(data, "test"))
    os.symlink(elsewhere, os.path.join(data, "test", "shard-0"))
    status = str(tmp_path / "flusher.json")
    proc = H.start_flusher(ring_path, data, "--status-file", status)
    try:
        wait_for(lambda: _blocked(status, "shard-0") or proc.poll() is not None, 30, "a waiting start")
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout(30)) == EXIT_DRAIN_TIMEOUT   # frames (none yet) stay in the ring
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert read_status(status)["state"] == "stopped"
    assert EXIT_OK != EXIT_DRAIN_TIMEOUT


def test_frames_committed_but_in_no_segment_are_named_by_a_gap_record(ring_path, tmp_path, capsys):
    """A segment lost after its frames were committed (a power loss under fsync=interval
    with the ring kept, a file removed): the next start writes a gap record for them."""
    ring.create(ring_path, capacity=1 << 20)
    data = str(tmp_path / "data")
    os.mkdir(data)
    clock = [H.BASE_NS]
    cfg = _cfg(ring_path, data, str(tmp_path / "flusher.json"), clock=lambda: clock[0])
    fl = Flusher(cfg)
    with ring.Producer(ring_path) as p:
        for i in range(100):
            assert p.write(H.payload(i, 6)) == ring.WriteStatus.OK
        _drain(fl)
        fl._close_segment()
        clock[0] += 10**9
        for i in range(100, 180):
            assert p.write(H.payload(i, 6)) == ring.WriteStatus.OK
        _drain(fl)
        fl.close()
        segs = list_segments(data)
        assert len(segs) == 2
        os.unlink(segs[1])
        os.unlink(index_path_for(segs[1]))
        assert cli.main(["verify", data]) == 0              # the hole is at the end: not seen yet
        capsys.readouterr()
        clock[0] += 10**9
        fl2 = Flusher(cfg)
        for i in range(180, 200):
            assert p.write(H.payload(i, 6)) == ring.WriteStatus.OK
        _drain(fl2)
        fl2.close()
    assert fl2.stats.missing_frames == 80
    got = list(read(data))
    assert [f.seq for f in got] == list(range(101)) + list(range(180, 200))
    assert got[100].type == FrameType.CONTROL and orjson.loads(got[100].payload)["last_seq"] == 179
    assert cli.main(["verify", data]) == 0
    out = capsys.readouterr().out
    assert "gap_record" in out and "sequences 100..179 lost" in out and "80 lost frames" in out
