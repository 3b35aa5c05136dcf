"""Issue 13, scenario 4: a producer killed (or stalled) inside the seqlock
write of head wedges nothing.

With the C harness a producer is SIGKILLed exactly inside the window while a
real flusher process drains the ring: every reader of head gets RingDamaged
after a bound instead of spinning, the flusher goes on and stops when told,
and the next producer repairs the ring without reusing a sequence.  Under
`capture run` a receiver stalled in the window (the generation held odd)
leaves /metrics and /healthz answering and SIGTERM obeyed; once the receiver
is killed and restarted the shard captures again and the repair is on disk.
"""
import os
import signal
import struct
import subprocess
import sys
import time

import orjson
import pytest

import ring
from common.errors import RingDamaged
from faultshard import assert_sequences_whole, controls, figures
from flusher.segments import read as segread
from seqlock_harness import GEN_OFF, pair_gen, pair_kill, proc_state  # noqa: F401 - pair_kill: fixture
from timing import timeout, wait_for

pytestmark = pytest.mark.timeout(600)






def test_producer_sigkilled_in_the_window_with_a_live_flusher(tmp_path, pair_kill):
    ring_dir = tmp_path / "ring"
    ring_dir.mkdir(mode=0o700)
    path = str(ring_dir / "shard-0.ring")
    data = str(tmp_path / "data")
    os.mkdir(data, 0o700)
    ring.create(path, 1 << 16).close()
    flusher = subprocess.Popen([sys.executable, "-m", "flusher.segments.drain", "--ring", path,
                                "--data-dir", data, "--venue", "kraken", "--shard", "0",
                                "--drain-timeout", "10"])
    try:
        wait_for(lambda: any(r["alive"] for r in ring.stats(path)["readers"]), 60, "the flusher attached")
        harness = subprocess.Popen([pair_kill, path, "50"])
        wait_for(lambda: proc_state(harness.pid) == "T", 30, "the harness stopped inside the window")
        assert pair_gen(path) % 2 == 1
        os.kill(harness.pid, signal.SIGKILL)
        harness.wait()
        t0 = time.monotonic()
        with pytest.raises(RingDamaged):
            ring.stats(path)
        bounded = time.monotonic() - t0
        assert flusher.poll() is None, "the flusher is not taken down by the damaged pair"
        p = ring.Producer(path)      # repairs, then records what happened
        for i in range(20):
            p.write(b"after %d" % i)
        p.close()
        assert pair_gen(path) % 2 == 0
        flusher.send_signal(signal.SIGTERM)
        assert flusher.wait(timeout(60)) == 0
    finally:
        if flusher.poll() is None:
            flusher.kill()
            flusher.wait()
    frames = list(segread.read(os.path.join(data, "kraken")))
    seqs = [f.seq for f in frames]
    assert seqs == list(range(len(frames))), "no sequence reused or skipped"
    payloads = [bytes(f.payload) for f in frames if f.type == ring.FrameType.DATA]
    assert payloads == ([b"frame %d" % i for i in range(50)] + [b"in the window"]
                        + [b"after %d" % i for i in range(20)])
    kinds = [orjson.loads(f.payload)["kind"] for f in frames if f.type == ring.FrameType.CONTROL]
    assert kinds == ["ring_repaired", "producer_restart", "gap"]
    print(f"\n[producer SIGKILLed inside the seqlock window] readers of head got RingDamaged after "
          f"{bounded:.1f}s (bounded); frames on disk {len(frames)}, none lost or duplicated; "
          f"flusher stayed up and stopped cleanly")


def test_receiver_stalled_in_the_window_under_capture_run(make_shard, nats_srv):
    sh = make_shard(f'servers = ["{nats_srv.url}"]')
    wait_for(sh.children_up, 60, "children up")
    wait_for(lambda: (sh.stats() or {}).get("frames", 0) > 300, 60, "frames flowing")
    receiver = sh.child_pid("receiver")
    os.kill(receiver, signal.SIGSTOP)   # stalled ...
    try:
        with open(sh.ring_path, "r+b") as f:  # ... between the odd and the even store
            f.seek(GEN_OFF)
            f.write(struct.pack("<I", pair_gen(sh.ring_path) | 1))
        with pytest.raises(RingDamaged):
            ring.stats(sh.ring_path)
        code, body = sh.get("/healthz")   # the supervisor answers: nothing held its thread
        assert code == 503 and b"ring damaged" in body, body
        assert sh.get("/metrics")[0] == 200
    finally:
        os.kill(receiver, signal.SIGKILL)
        os.kill(receiver, signal.SIGCONT)
    wait_for(lambda: (sh.stats() or {"producer": {"pid": receiver}})["producer"]["pid"] != receiver
             and sh.stats()["producer"]["alive"], 60, "the receiver restarted; its producer repairs")
    before = sh.stats()["frames"]
    wait_for(lambda: sh.stats()["frames"] > before + 200, 60, "frames flowing after the repair")
    assert sh.stop() == 0, sh.stderr[-3000:]
    frames = sh.disk_frames()
    fig = figures(sh, frames, "receiver stalled in the seqlock window")
    assert_sequences_whole(frames)
    assert fig["in_records"] == fig["refused"]
    kinds = [c["kind"] for c in controls(frames)]
    assert "ring_repaired" in kinds and fig["producer_died_records"] == 1


def test_shard_starts_on_a_ring_left_damaged(make_shard, nats_srv):
    """The whole shard went down with the generation odd (e.g. a reboot of
    the services, not of the host): the next start repairs it instead of
    failing on every reader's claim."""
    sh = make_shard(f'servers = ["{nats_srv.url}"]')
    wait_for(sh.children_up, 60, "children up")
    wait_for(lambda: (sh.stats() or {}).get("frames", 0) > 100, 60, "frames flowing")
    assert sh.stop() == 0
    with open(sh.ring_path, "r+b") as f:
        f.seek(GEN_OFF)
        f.write(struct.pack("<I", pair_gen(sh.ring_path) | 1))
    with pytest.raises(RingDamaged):
        ring.stats(sh.ring_path)
    sh2 = make_shard(f'servers = ["{nats_srv.url}"]', ring_dir=sh.ring_dir)
    wait_for(sh2.children_up, 60, "children up on the repaired ring")
    before = sh2.stats()["frames"]
    wait_for(lambda: sh2.stats()["frames"] > before + 100, 60, "frames flowing")
    assert sh2.stop() == 0, sh2.stderr[-3000:]
    assert "event=ring_damaged action=repair" in sh2.stderr
    frames = sh2.disk_frames()
    assert_sequences_whole(frames)
    assert "ring_repaired" in [c["kind"] for c in controls(frames)]


def test_receiver_dead_inside_the_window_at_sigterm(make_shard, nats_srv):
    """Scenarios 4 and 6 at once: the receiver dies inside the head update and
    the shard is stopped before it is restarted.  The stop repairs the ring,
    records the loss, and ends cleanly."""
    sh = make_shard(f'servers = ["{nats_srv.url}"]')
    wait_for(sh.children_up, 60, "children up")
    wait_for(lambda: (sh.stats() or {}).get("frames", 0) > 300, 60, "frames flowing")
    receiver = sh.child_pid("receiver")
    os.kill(sh.proc.pid, signal.SIGSTOP)   # no restart before the SIGTERM
    try:
        os.kill(receiver, signal.SIGSTOP)
        with open(sh.ring_path, "r+b") as f:
            f.seek(GEN_OFF)
            f.write(struct.pack("<I", pair_gen(sh.ring_path) | 1))
        os.kill(receiver, signal.SIGKILL)
        wait_for(lambda: proc_state(receiver) == "Z", 30, "the receiver dead")
        sh.proc.send_signal(signal.SIGTERM)
    finally:
        os.kill(sh.proc.pid, signal.SIGCONT)
    assert sh.proc.wait(120) == 0, sh.stderr[-3000:]
    frames = sh.disk_frames()
    fig = figures(sh, frames, "receiver dead inside the seqlock window at SIGTERM")
    assert_sequences_whole(frames)
    assert fig["in_records"] == fig["refused"]
    ctl = controls(frames)
    kinds = [c["kind"] for c in ctl]
    assert kinds[-4:] == ["ring_repaired", "producer_restart", "gap", "shard_stop"], kinds[-6:]
    assert ctl[-2]["prev_pid"] == receiver and ctl[-1]["written_by"] == "supervisor"
