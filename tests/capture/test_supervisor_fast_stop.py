"""The fast stop (a second signal) still writes what a dead receiver owed -
its unrecorded drops, the ``producer_died`` window and a ``shard_stop`` -
and lets the real flusher carry them to disk before it is stopped.

Quick, without a venue: the real flusher, a stand-in receiver (a producer
that fills the ring while the flusher is held, so frames are refused and
their drop record is still owed when it is SIGKILLed) and a stand-in
publisher.  The whole shard with real signals is in
tests/faults/test_fast_stop.py."""
from __future__ import annotations

import os
import signal
import sys

import pytest

import ring
from capture import config
from capture.sdnotify import Notifier
from capture.supervisor import EXIT_OK, Supervisor, settings_command
from faultshard import assert_sequences_whole, controls
from flusher.segments import read as segread
from timing import wait_for

pytestmark = pytest.mark.timeout(120)

# Fills the ring once told to (the flusher is held by then), until 50 frames
# were refused, then says so and waits to be killed: it never closes, so
# the drop record it owes stays owed in the ring header.
RECEIVER = """
import os, sys, time
import ring
path, go, ready = sys.argv[1:4]
p = ring.Producer(path)
while not os.path.exists(go):
    time.sleep(0.01)
i = refused = 0
while refused < 50:
    if p.write(b"frame %d" % i) == ring.WriteStatus.FULL:
        refused += 1
    i += 1
open(ready, "w").close()
time.sleep(600)
"""

# Holds an untethered reader slot under its role's name, as the publisher
# and the checksum validator do; SIGTERM ends it.
READER = """
import sys, time
import ring
rd = ring.Reader(sys.argv[1], sys.argv[2], tethered=False)
while True:
    rd.heartbeat()
    time.sleep(0.1)
"""


@pytest.fixture
def sup(tmp_path):
    ring_dir = tmp_path / "ring"
    ring_dir.mkdir(mode=0o700)
    go, ready = str(tmp_path / "go"), str(tmp_path / "ready")
    cfg = config.loads(f"""
[ring]
dir = "{ring_dir}"
capacity = "64KiB"
[storage]
data_dir = "{tmp_path / 'data'}"
compress = false
drain_timeout = "20s"
[nats]
servers = ["nats://127.0.0.1:1"]
[metrics]
port_base = 0
[[shard]]
id = 0
venue = "kraken"
discovery = true
""")
    commands = {
        "receiver": lambda s, role: [sys.executable, "-c", RECEIVER, s.ring_path, go, ready],
        "publisher": lambda s, role: [sys.executable, "-c", READER, s.ring_path, role],
        "integrity": lambda s, role: [sys.executable, "-c", READER, s.ring_path, role],
        "flusher": settings_command,
    }
    s = Supervisor(cfg, 0, notifier=Notifier(), tick=30.0, commands=commands)
    s.go, s.ready = go, ready
    yield s
    for c in s.children.values():
        if c.alive():
            c.proc.kill()
            c.proc.wait()
    if s._metrics:
        s._metrics.stop()


def test_fast_stop_with_the_receiver_dead_writes_what_it_owed_to_disk(sup):
    sup._start()
    flusher = sup.children["flusher"].pid
    receiver = sup.children["receiver"].pid
    os.kill(flusher, signal.SIGSTOP)
    try:
        open(sup.go, "w").close()
        wait_for(lambda: os.path.exists(sup.ready), 60, "the stand-in receiver to have frames refused")
        os.kill(receiver, signal.SIGKILL)
        sup.children["receiver"].proc.wait()
    finally:
        os.kill(flusher, signal.SIGCONT)
    st = ring.stats(sup.ring_path)
    refused = st["drops"]["full"] + st["drops"]["too_large"]
    assert refused >= 50 and st["drops_unrecorded"] == refused, "the drop record is still owed"

    sup._signals = 2            # what two SIGTERMs leave behind (see tests/faults)
    sup._shutdown(fast=True)

    assert sup.exit_code == EXIT_OK
    assert not any(c.alive() for c in sup.children.values())
    st = ring.stats(sup.ring_path)
    assert st["drops_unrecorded"] == 0 and st["drops_recorded"] == refused
    frames = list(segread.read(os.path.join(sup.cfg.storage.data_dir, "kraken")))
    assert_sequences_whole(frames)
    assert frames[-1].seq == st["next_seq"] - 1, "the flusher drained the ring to its end"
    ctl = controls(frames)
    in_records = sum(c.get("count", 0) for c in ctl if c["kind"] == "drop")
    assert in_records == refused, "every refused frame is in a record on disk"
    died = [c for c in ctl if c.get("reason") == "producer_died"]
    assert len(died) == 1 and died[0]["prev_pid"] == receiver, "the dead receiver's window is on disk"
    assert ctl[-1]["kind"] == "shard_stop" and ctl[-1]["written_by"] == "supervisor"
    data = [f for f in frames if f.type == ring.FrameType.DATA]
    assert data and bytes(data[0].payload) == b"frame 0", "what the receiver wrote is on disk"
