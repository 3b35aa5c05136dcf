"""What only the fault suite (tests/faults/) needs of a shard: the figures
each scenario reports (frames refused vs frames in records, shard up or not)
and the checks on what reached the disk.  The shard itself, started,
watched and stopped, is :class:`shard.Shard`."""
from __future__ import annotations

import orjson

import ring
from shard import Shard


def controls(frames: list) -> list[dict]:
    return [orjson.loads(f.payload) for f in frames if f.type == ring.FrameType.CONTROL]


def figures(shard: Shard, frames: list, label: str) -> dict:
    """Frames refused (the ring header) against frames in records on disk,
    printed for the suite's report."""
    st = ring.stats(shard.ring_path)
    refused = st["drops"]["full"] + st["drops"]["too_large"]
    ctl = controls(frames)
    in_records = sum(c.get("count", 0) for c in ctl if c.get("kind") == "drop") + \
        sum(1 for c in ctl if c.get("kind") == "oversize")
    data = sum(1 for f in frames if f.type == ring.FrameType.DATA)
    died = [c for c in ctl if c.get("kind") == "gap" and c.get("reason") == "producer_died"]
    out = {"refused": refused, "in_records": in_records, "recorded_counter": st["drops_recorded"],
           "data_on_disk": data, "producer_died_records": len(died),
           "exit": shard.proc.returncode}
    print(f"\n[{label}] frames refused {refused} vs frames in drop records on disk {in_records} "
          f"(header says recorded {st['drops_recorded']}); data frames on disk {data}; "
          f"producer_died records {len(died)}; shard exit code {shard.proc.returncode}")
    return out


def assert_sequences_whole(frames: list) -> None:
    seqs = [f.seq for f in frames]
    assert seqs == sorted(set(seqs)), "disk: every frame once, in order"
