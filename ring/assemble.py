"""Reassembly of fragmented frames (FRAG_BEGIN, FRAG_MIDDLE..., FRAG_END).

The producer splits a frame above the fragment limit into a chain of
fragments with consecutive sequence numbers.  FRAG_BEGIN's flags byte carries
the original frame's flags (low nibble) and type (high nibble).  A chain is
complete only at a FRAG_END without the ABORTED flag; anything else that
interrupts it (an ABORTED end, a new BEGIN, a whole frame, a sequence gap)
discards the partial frame and reports it, so a consumer never mistakes part
of a frame for all of it.  Pure Python, no I/O: the ring reader, the segment
reader and the publisher all use it.
"""
from __future__ import annotations

from typing import NamedTuple

from ring.frame import FrameFlags, FrameType

_BEGIN, _MIDDLE, _END = int(FrameType.FRAG_BEGIN), int(FrameType.FRAG_MIDDLE), int(FrameType.FRAG_END)
_ABORTED = int(FrameFlags.ABORTED)


class Message(NamedTuple):
    """A whole frame: ``seq`` is the first fragment's, ``last_seq`` the last's."""
    seq: int
    last_seq: int
    ts: int
    type: int
    flags: int
    conn: int
    payload: bytes | memoryview


class Dropped(NamedTuple):
    """A fragment chain that did not complete."""
    first_seq: int
    last_seq: int
    nbytes: int
    reason: str


class Assembler:
    """Feed frames in sequence order; get whole messages back."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._first = -1
        self._last = -1
        self._ts = 0
        self._type = 0
        self._flags = 0
        self._conn = 0
        self.dropped: list[Dropped] = []

    @property
    def open_chain_seq(self) -> int | None:
        """Sequence of the FRAG_BEGIN of an unfinished chain, if any."""
        return self._first if self._first >= 0 else None

    def _drop(self, reason: str) -> None:
        if self._first >= 0:
            self.dropped.append(Dropped(self._first, self._last, sum(map(len, self._parts)), reason))
        self._parts = []
        self._first = -1

    def feed(self, seq: int, ts: int, type: int, flags: int, conn: int,
             payload: bytes | memoryview) -> Message | None:
        """Returns a whole message, or None while a chain is incomplete.

        Whole (non-fragment) frames are returned as they are (payload not
        copied); reassembled ones as bytes."""
        if type == _BEGIN:
            self._drop("interrupted by a new chain")
            self._parts = [bytes(payload)]
            self._first = self._last = seq
            self._ts, self._conn = ts, conn
            self._type, self._flags = flags >> 4, flags & 0x0F
            return None
        if type == _MIDDLE or type == _END:
            if self._first < 0:
                self.dropped.append(Dropped(seq, seq, len(payload), "fragment without a beginning"))
                return None
            if seq != self._last + 1:
                self._drop(f"sequence gap inside a chain ({self._last} -> {seq})")
                return None
            self._last = seq
            if type == _END and flags & _ABORTED:
                self._drop("aborted by the producer (ring full)")
                return None
            self._parts.append(bytes(payload))
            if type == _MIDDLE:
                return None
            msg = Message(self._first, seq, self._ts, self._type, self._flags, self._conn,
                          b"".join(self._parts))
            self._parts = []
            self._first = -1
            return msg
        if self._first >= 0:
            self._drop("interrupted by a whole frame")
        return Message(seq, seq, ts, type, flags, conn, payload)
