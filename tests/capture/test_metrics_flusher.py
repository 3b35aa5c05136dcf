"""A flusher waiting for the disk shows in /metrics and fails /healthz."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

import ring
from capture.metrics import ShardCollector, ShardView
from common.status import status_path, write_status


@pytest.fixture
def ring_dir():
    d = tempfile.mkdtemp(prefix="capture-metrics-test-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _value(collector: ShardCollector, name: str) -> float:
    for fam in collector.collect():
        if fam.name == name:
            (s,) = fam.samples
            return s.value
    raise AssertionError(f"no metric {name}")


@pytest.mark.parametrize("state,blocked", [("start_blocked", 1.0), ("io_error", 1.0), ("running", 0.0)])
def test_flusher_waiting_for_the_disk(ring_dir, state, blocked):
    path = os.path.join(ring_dir, "shard-0.ring")
    ring.create(path, capacity=1 << 16).close()
    err = "start: EROFS: Read-only file system: /data/kraken"
    write_status(status_path(ring_dir, 0, "flusher"),
                 {"state": state, "last_error": err, "start_retries": 5, "io_retries": 2,
                  "unsafe_paths": 1, "damaged_frames": 19})
    view = ShardView(path, ring_dir, 0, "kraken")
    col = ShardCollector(view)
    assert _value(col, "capture_flusher_blocked") == blocked
    assert _value(col, "capture_flusher_io_retries") == 7
    assert _value(col, "capture_flusher_unsafe_paths") == 1
    assert _value(col, "capture_flusher_damaged_frames") == 19
    ok, doc = view.health()
    assert not ok                    # no receiver here either; the flusher's reason is what we check
    assert (f"flusher waits for the disk: {err}" in doc["reasons"]) == bool(blocked)
