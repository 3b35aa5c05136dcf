"""The fast stop (a second SIGTERM/SIGINT) with the receiver dead: what it
owed - the frames refused while the ring was full, the ``producer_died``
window and a ``shard_stop`` - is on disk, and the counts match the ring's
drop counters.  Real processes, real signals, the bundled simulator.
"""
import os
import signal

import pytest

from faultshard import assert_dead_receiver_loss_on_disk
from timing import timeout, wait_for

pytestmark = pytest.mark.timeout(600)


def _receiver_dead_with_drops_owed(sh) -> tuple[int, int]:
    """Hold the flusher until frames are refused, then hold the supervisor
    (so it cannot restart the receiver) and SIGKILL the receiver: its drop
    record is still owed.  Returns (receiver pid, flusher pid); the
    supervisor and the flusher are left stopped."""
    wait_for(sh.children_up, 60, "children up")
    wait_for(lambda: (sh.stats() or {}).get("frames", 0) > 300, 60, "frames flowing")
    flusher = sh.child_pid("flusher")
    os.kill(flusher, signal.SIGSTOP)
    wait_for(lambda: (sh.stats() or {}).get("drops", {}).get("full", 0) >= 2000, 60,
             "2000 frames refused with the flusher stopped")
    receiver = sh.child_pid("receiver")
    os.kill(sh.proc.pid, signal.SIGSTOP)
    os.kill(receiver, signal.SIGKILL)
    wait_for(lambda: not (sh.stats() or {"producer": {"alive": True}})["producer"]["alive"], 30,
             "the receiver gone")
    assert sh.stats()["drops_unrecorded"] > 0, "the dead receiver's drop record is owed"
    return receiver, flusher


def _check_on_disk(sh, receiver: int, label: str) -> None:
    assert_dead_receiver_loss_on_disk(sh, receiver, label)


def test_fast_stop_from_the_start_records_the_dead_receivers_loss(make_shard, nats_srv):
    sh = make_shard(f'servers = ["{nats_srv.url}"]', capacity="64KiB")
    receiver, flusher = _receiver_dead_with_drops_owed(sh)
    # Two different signals both pending while the supervisor is held: it
    # sees both before it stops anything, so its stop is the fast one.
    sh.proc.send_signal(signal.SIGTERM)
    sh.proc.send_signal(signal.SIGINT)
    os.kill(flusher, signal.SIGCONT)
    os.kill(sh.proc.pid, signal.SIGCONT)
    assert sh.proc.wait(timeout(120)) == 0, sh.stderr[-3000:]
    assert "event=shutdown fast=true" in sh.stderr and "event=shutdown fast=false" not in sh.stderr
    _check_on_disk(sh, receiver, "receiver dead, fast stop from the start")


def test_second_signal_during_the_stop_records_the_dead_receivers_loss(make_shard, nats_srv):
    sh = make_shard(f'servers = ["{nats_srv.url}"]', capacity="64KiB")
    receiver, flusher = _receiver_dead_with_drops_owed(sh)
    sh.proc.send_signal(signal.SIGTERM)
    os.kill(sh.proc.pid, signal.SIGCONT)
    wait_for(lambda: "event=shutdown fast=false" in sh.stderr, 60, "the ordered stop to begin")
    # The flusher is still held: the ordered stop is waiting on it when the
    # operator's "stop now" arrives.
    sh.proc.send_signal(signal.SIGINT)
    wait_for(lambda: "event=fast_stop" in sh.stderr or "event=shutdown fast=true" in sh.stderr, 60,
             "the stop to turn fast")
    os.kill(flusher, signal.SIGCONT)
    assert sh.proc.wait(timeout(120)) == 0, sh.stderr[-3000:]
    _check_on_disk(sh, receiver, "receiver dead, second signal during the stop")
