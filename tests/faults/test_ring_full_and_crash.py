"""Issue 13, scenarios 1 and 6: every refused or lost frame is a record on
disk, whatever stops or crashes.

1a. The ring fills (flusher stopped) and the shard is stopped meanwhile.
1b. The ring fills and the receiver is SIGKILLed.
6.  The receiver is dead when SIGTERM reaches the supervisor.
"""
import os
import signal

import pytest

from faultshard import assert_dead_receiver_loss_on_disk, assert_sequences_whole, controls, figures
from timing import wait_for

pytestmark = pytest.mark.timeout(600)


def _stall_flusher_until_drops(sh, at_least=2000):
    pid = sh.child_pid("flusher")
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: (sh.stats() or {}).get("drops", {}).get("full", 0) >= at_least, 60,
             f"{at_least} frames refused with the flusher stopped")
    return pid


def test_ring_full_then_stop(make_shard, nats_srv):
    sh = make_shard(f'servers = ["{nats_srv.url}"]', capacity="64KiB")
    wait_for(sh.children_up, 60, "children up")
    wait_for(lambda: (sh.stats() or {}).get("frames", 0) > 300, 60, "frames flowing")
    flusher = _stall_flusher_until_drops(sh)
    # Stop with the ring still full: the receiver's drop record and its
    # shard_stop must land anyway (the reserve), before the flusher resumes.
    sh.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: (sh.stats() or {}).get("producer", {}).get("state") == "stopped", 60,
             "the receiver to close the ring")
    os.kill(flusher, signal.SIGCONT)
    assert sh.proc.wait(120) == 0, sh.stderr[-3000:]
    frames = sh.disk_frames()
    fig = figures(sh, frames, "ring full then stop")
    assert_sequences_whole(frames)
    assert fig["refused"] > 0
    assert fig["in_records"] == fig["refused"], "every refused frame is in a record on disk"
    kinds = [c["kind"] for c in controls(frames)]
    assert kinds[-1] == "shard_stop", kinds[-5:]


def test_ring_full_then_receiver_sigkill(make_shard, nats_srv):
    sh = make_shard(f'servers = ["{nats_srv.url}"]', capacity="64KiB")
    wait_for(sh.children_up, 60, "children up")
    wait_for(lambda: (sh.stats() or {}).get("frames", 0) > 300, 60, "frames flowing")
    flusher = _stall_flusher_until_drops(sh)
    receiver = sh.child_pid("receiver")
    os.kill(receiver, signal.SIGKILL)
    wait_for(lambda: (sh.stats() or {})["producer"]["pid"] != receiver
             and sh.stats()["producer"]["alive"], 60, "the receiver restarted")
    os.kill(flusher, signal.SIGCONT)
    before = sh.stats()["frames"]
    wait_for(lambda: sh.stats()["frames"] > before + 300, 60, "frames flowing after the restart")
    assert sh.up(), "the shard stayed up"
    assert sh.stop() == 0, sh.stderr[-3000:]
    frames = sh.disk_frames()
    fig = figures(sh, frames, "ring full then receiver SIGKILL")
    assert_sequences_whole(frames)
    assert fig["refused"] > 0
    assert fig["in_records"] == fig["refused"], "every refused frame is in a record on disk"
    assert fig["producer_died_records"] == 1, "the dead receiver's window is on disk"
    died = next(c for c in controls(frames) if c.get("reason") == "producer_died")
    assert died["prev_pid"] == receiver and died["since_ns"] <= died["until_ns"]


def test_receiver_dead_at_sigterm(make_shard, nats_srv):
    sh = make_shard(f'servers = ["{nats_srv.url}"]')
    wait_for(sh.children_up, 60, "children up")
    wait_for(lambda: (sh.stats() or {}).get("frames", 0) > 300, 60, "frames flowing")
    receiver = sh.child_pid("receiver")
    # Hold the supervisor so it cannot restart the receiver before it sees
    # the SIGTERM: the receiver is dead for good when the stop begins.
    os.kill(sh.proc.pid, signal.SIGSTOP)
    try:
        os.kill(receiver, signal.SIGKILL)
        wait_for(lambda: not (sh.stats() or {"producer": {"alive": True}})["producer"]["alive"], 30,
                 "the receiver gone")
        sh.proc.send_signal(signal.SIGTERM)
    finally:
        os.kill(sh.proc.pid, signal.SIGCONT)
    assert sh.proc.wait(120) == 0, sh.stderr[-3000:]
    assert_dead_receiver_loss_on_disk(sh, receiver, "receiver dead at SIGTERM", refused=False)
