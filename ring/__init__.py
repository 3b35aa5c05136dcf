"""capture's shared-memory ring: one producer, several named reader cursors.

    import ring
    ring.create("/dev/shm/capture/shard-3.ring")            # once
    with ring.Producer(path) as p:                           # the receiver
        p.write(b'{"channel":"trade",...}', ts=recv_ns, conn=2)
    rd = ring.Reader(path, "flusher", tethered=True)         # a drain
    while rd.wait(1.0):
        batch = rd.read()
        for frame in batch: ...
        rd.commit(batch)

See ring/file.py (files, locks), ring/producer.py, ring/reader.py,
ring/drain.py (a tethered reader's drain straight into a file) and the
theory-of-operation block in csrc/ring.c.
"""
from ring.assemble import Assembler, Dropped, Message
from ring.drain import Drained, FileDrain
from common.errors import (BadRingFile, CaptureError, CorruptFrame, Lapped, NoReaderSlot, ProducerBusy, ReaderBusy, RingDamaged, RingError, RingExists)
from ring.file import DEFAULT_CAPACITY, DEFAULT_DIR, DEFAULT_MAX_FRAME, RingFile, attach, create, default_path, ensure_dir
from ring.frame import FrameFlags, FrameType, crc32c
from ring.producer import Producer, WriteStatus
from ring.reader import Batch, Frame, Reader
from ring.stats import remove_reader, stats

__all__ = [
    "Assembler", "Dropped", "Message", "BadRingFile", "CaptureError", "CorruptFrame", 
    "Lapped", "NoReaderSlot", "ProducerBusy", "ReaderBusy", "RingDamaged", "RingError", "RingExists",
    "DEFAULT_CAPACITY", "DEFAULT_DIR", "DEFAULT_MAX_FRAME", "RingFile", "attach", "create",
    "default_path", "ensure_dir", "FrameFlags", "FrameType", "crc32c", "Producer", "WriteStatus",
    "Batch", "Frame", "Reader", "remove_reader", "stats", "Drained", "FileDrain",
]
