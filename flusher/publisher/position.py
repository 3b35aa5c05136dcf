"""Where the publisher stands in its shard's frame sequence.

``next_seq`` is the first frame not yet handed to the ack pipeline; it always
names a message boundary, never the inside of a fragment chain (see
flusher.publisher.publish, "Sources").  The assembler holds the chain being
read, if any.  The two change together: whenever the source changes (a lap,
a corrupt ring frame, a new round on the segment files, back to the ring)
reading restarts at ``next_seq`` with a fresh assembler, so nothing
half-assembled from one source is finished with frames from the other.

One :class:`Position` is shared by the ring pump and the frame loop
(publish.Publisher) and the catch-up (catchup.SegmentCatchup): it is the one
owner of both values, and both parts move them only through it.
"""
from __future__ import annotations

from ring.assemble import Assembler


class Position:
    """``next_seq`` and the assembler of the chain in progress.

    The frame loop binds both to locals once per batch and writes
    ``next_seq`` back before it awaits and when the batch ends (the hot path
    pays no attribute hop per frame)."""

    __slots__ = ("next_seq", "asm")

    def __init__(self, next_seq: int = 0) -> None:
        self.next_seq = next_seq
        self.asm = Assembler()

    def restart(self, at: int | None = None) -> None:
        """Read again from ``next_seq`` (or from ``at``, moving there): a fresh
        assembler, as ``next_seq`` is a message boundary."""
        if at is not None:
            self.next_seq = at
        self.asm = Assembler()
