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


def assert_dead_receiver_loss_on_disk(shard: Shard, receiver: int, label: str, *,
                                      refused: bool = True) -> dict:
    """What a stop with a dead receiver must leave on disk: every frame once,
    every refused frame in a record (and the ring header agreeing), one
    ``producer_died`` naming the dead receiver's pid and window, and the
    supervisor's ``shard_stop`` last.  Returns the figures."""
    frames = shard.disk_frames()
    fig = figures(shard, frames, label)
    assert_sequences_whole(frames)
    if refused:
        assert fig["refused"] > 0
    assert fig["in_records"] == fig["refused"] == fig["recorded_counter"], \
        "every refused frame is in a record on disk"
    ctl = controls(frames)
    died = [c for c in ctl if c.get("reason") == "producer_died"]
    assert len(died) == 1 and died[0]["prev_pid"] == receiver, "the lost window is on disk"
    assert died[0]["since_ns"] <= died[0]["until_ns"]
    assert ctl[-1]["kind"] == "shard_stop" and ctl[-1].get("written_by") == "supervisor"
    assert "event=receiver_loss_recorded" in shard.stderr
    return fig
