"""What the simulator sent, per connection, for byte-for-byte assertions.

Tests assert "every frame the simulator sent is in the ring exactly once, in
order, byte for byte".  A connection keeps either every payload (mode
``frames``) or a running count and digest (``digest``) that the test
recomputes with :func:`frames_digest` over what it read back, or only a count
(``count``, for blast benchmarks that send millions of frames).
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Iterable


def _hasher() -> "hashlib._Hash":
    return hashlib.blake2b(digest_size=16)


def length_prefixed(payload: bytes) -> bytes:
    return len(payload).to_bytes(8, "little") + payload


def frames_digest(frames: Iterable[bytes]) -> str:
    """The digest a :class:`ConnectionRecord` reports for these payloads.

    Each payload is hashed with an 8-byte little-endian length prefix, so
    concatenations and splits of frames do not collide.
    """
    h = _hasher()
    for f in frames:
        h.update(length_prefixed(bytes(f)))
    return h.hexdigest()


@dataclass
class ConnectionRecord:
    """One accepted WebSocket connection of one venue server.

    Attributes:
        venue: venue name; ``index``: 0-based accept order on that server.
        path, headers: the handshake request.
        sent: every payload sent, in order (mode ``frames`` only).
        count, nbytes: data + control messages sent, and their payload bytes.
        data_count: how many of them were data messages.
        received: every message the client sent (text as str, binary as bytes).
        closed: set when the connection is over; ``close_code`` as the server saw it.
    """

    venue: str
    index: int
    path: str
    headers: dict[str, str]
    mode: str = "frames"
    sent: list[bytes] = field(default_factory=list)
    count: int = 0
    nbytes: int = 0
    data_count: int = 0
    received: list[str | bytes] = field(default_factory=list)
    closed: bool = False
    close_code: int | None = None
    opened_at: float = field(default_factory=time.time)
    #: A paced blast's schedule report (``BlastPlan.stats``), else None.
    blast: dict | None = None
    _hash: object = field(default_factory=_hasher, repr=False)

    def add(self, payload: bytes, data: bool) -> None:
        self.count += 1
        self.nbytes += len(payload)
        if data:
            self.data_count += 1
        if self.mode == "count":
            return
        self._hash.update(length_prefixed(payload))  # type: ignore[attr-defined]
        if self.mode == "frames":
            self.sent.append(payload)

    def add_block(self, payloads: list[bytes], nbytes: int, prefixed_block: bytes) -> None:
        """Account for blast frames written as one pre-framed block.

        ``prefixed_block`` is the payloads already length-prefixed, so the
        digest costs one hash update per block, not Python work per frame.
        """
        self.count += len(payloads)
        self.data_count += len(payloads)
        self.nbytes += nbytes
        if self.mode == "count":
            return
        self._hash.update(prefixed_block)  # type: ignore[attr-defined]
        if self.mode == "frames":
            self.sent.extend(payloads)

    def digest(self) -> str | None:
        return None if self.mode == "count" else self._hash.hexdigest()  # type: ignore[attr-defined]

    def summary(self) -> dict:
        return {"venue": self.venue, "index": self.index, "path": self.path,
                "count": self.count, "nbytes": self.nbytes,
                "data_count": self.data_count, "digest": self.digest(),
                "closed": self.closed, "close_code": self.close_code,
                **({"blast": self.blast} if self.blast is not None else {})}


def write_frames(path: str, frames: Iterable[bytes]) -> None:
    """Write payloads as 8-byte little-endian length + bytes, in order."""
    with open(path, "wb") as f:
        for p in frames:
            f.write(length_prefixed(p))


def read_frames(path: str) -> list[bytes]:
    """The payloads :func:`write_frames` wrote."""
    with open(path, "rb") as f:
        data = f.read()
    out, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 8], "little")
        out.append(data[pos + 8:pos + 8 + n])
        pos += 8 + n
    return out
