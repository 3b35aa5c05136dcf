"""/healthz and /metrics say what is wrong downstream without stopping
anything, and never hang on a damaged ring."""
import struct

import pytest

import ring
from capture.metrics import ShardCollector, ShardView
from common.status import status_path, write_status


@pytest.fixture
def shard_dir(tmp_path):
    d = tmp_path / "ring"
    d.mkdir(mode=0o700)
    path = str(d / "shard-0.ring")
    ring.create(path, 1 << 16).close()
    return str(d), path


def _view(shard_dir):
    d, path = shard_dir
    return ShardView(path, d, 0, "kraken")


def test_publisher_refused_by_nats_fails_healthz_with_the_reason(shard_dir):
    d, _ = shard_dir
    write_status(status_path(d, 0, "publisher"), {"nats": "refusing credentials",
                                                  "nats_error": "Authorization Violation",
                                                  "stats": {"auth_failed": 4}})
    ok, body = _view(shard_dir).health()
    assert not ok
    assert any("NATS refusing credentials (Authorization Violation)" in r for r in body["reasons"])
    fams = {f.name: f for f in ShardCollector(_view(shard_dir)).collect()}
    assert fams["capture_publisher_nats_connected"].samples[0].value == 0.0
    assert fams["capture_publisher_connect_failures"].samples[0].value == 4


def test_child_over_budget_fails_healthz_and_is_a_metric(shard_dir):
    d, _ = shard_dir
    write_status(status_path(d, 0, "supervisor"), {"children": {
        "publisher": {"alive": False, "restarts": 9, "restarts_in_window": 6, "over_budget": True,
                      "last_exit": 1},
        "flusher": {"alive": True, "restarts": 0, "restarts_in_window": 0, "over_budget": False}}})
    ok, body = _view(shard_dir).health()
    assert not ok and any(r.startswith("publisher keeps failing (6 restarts") for r in body["reasons"])
    assert not any(r.startswith("flusher keeps failing") for r in body["reasons"])
    fams = {f.name: f for f in ShardCollector(_view(shard_dir)).collect()}
    restarts = {s.labels["child"]: s.value for s in fams["capture_child_restarts"].samples
                if s.name.endswith("_total")}
    assert restarts == {"publisher": 9, "flusher": 0}
    over = {s.labels["child"]: s.value for s in fams["capture_child_over_budget"].samples}
    assert over == {"publisher": 1.0, "flusher": 0.0}


def test_damaged_ring_is_reported_not_waited_on(shard_dir):
    d, path = shard_dir
    with open(path, "r+b") as f:  # the head seqlock left odd (ring.c, H_PAIR_GEN)
        f.seek(128 + 16)
        f.write(struct.pack("<I", 1))
    ok, body = _view(shard_dir).health()
    assert not ok and any("ring damaged" in r for r in body["reasons"])
    list(ShardCollector(_view(shard_dir)).collect())  # answers, without the ring's figures


def test_drops_not_yet_recorded_are_a_metric(shard_dir):
    _, path = shard_dir
    p = ring.Producer(path, reserve=0)
    rd = ring.Reader(path, "flusher", tethered=True)
    while p.write(b"x" * 8) == ring.WriteStatus.OK:
        pass
    p.write(b"y" * 8)
    fams = {f.name: f for f in ShardCollector(_view(shard_dir)).collect()}
    assert fams["capture_ring_drops_unrecorded"].samples[0].value == 2
    rd.commit(rd.read())
    p.poll()   # room again: the drop record is written
    fams = {f.name: f for f in ShardCollector(_view(shard_dir)).collect()}
    assert fams["capture_ring_drops_unrecorded"].samples[0].value == 0
    p.close()
    rd.close()
