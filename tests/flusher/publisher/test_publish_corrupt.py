"""A frame damaged in the shared ring (a bit flip) is never published from the ring:
the publisher counts it, logs it, and publishes the copy the flusher checked and
wrote to the segment files instead."""
from __future__ import annotations

import mmap
import os

import ring
from ring.file import HEADER_SIZE

from conftest_nats import *  # noqa: F401,F403,E402
from conftest_nats import (Shard, assert_exactly_once, disk_frames, head_seq,  # noqa: E402
                           publisher_stats, read_stream, run_async, wait_for)

STREAM = "PROD_TESTV"


def _flip_in_ring(path: str, capacity: int, seq: int, at: int) -> bytes:
    """Flip one payload bit of frame ``seq`` in the ring file; returns the frame's payload."""
    rd = ring.Reader(path, "probe", tethered=False, start="oldest", max_frames=4096)
    try:
        b = rd.read()
        i = b.seq.tolist().index(seq)
        pos, body = int(b.pos[i]), bytes(b.payload(i))
    finally:
        rd.remove()
    fd = os.open(path, os.O_RDWR)
    try:
        with mmap.mmap(fd, HEADER_SIZE + capacity) as mm:
            off = HEADER_SIZE + (pos & (capacity - 1)) + ring.frame.HEADER + at
            mm[off] ^= 0x20
    finally:
        os.close(fd)
    return body


def test_a_bit_flip_in_the_ring_is_not_published(shard: Shard, nats_server):
    shard.start_flusher()
    frames = [b"book.A|%d|" % i + b"x" * 60 for i in range(300)]
    with ring.Producer(shard.ring_path) as p:
        for body in frames:
            assert p.write(body) == ring.WriteStatus.OK
    head = head_seq(shard.ring_path)
    wait_for(lambda: shard.reader_seq("flusher") >= head, 60, "the flusher to write everything")
    victim = head - 150
    good = _flip_in_ring(shard.ring_path, shard.capacity, victim, 12)
    shard.start_publisher()
    wait_for(lambda: shard.reader_seq("publisher") >= head, 60, "the publisher to commit everything")
    assert shard.stop("publisher") == 0, shard.log("publisher")
    assert shard.stop("flusher") == 0
    expected = disk_frames(shard.data_dir, shard.ring_id)
    assert expected[victim][1] == good                  # the disk copy is the good one
    msgs = run_async(read_stream([nats_server.url], STREAM))
    assert_exactly_once(msgs, expected, shard.ring_id)   # the good copy, once; never the flipped one
    stats = publisher_stats(shard.log("publisher"))
    assert stats["corrupt_frames"] == 1
    assert f"event=corrupt_frame seq={victim} ring_position=" in shard.log("publisher")
