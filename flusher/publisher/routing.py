"""Which NATS subject a frame goes to.

``{prefix}.{venue}.{channel}.{symbol}`` from the venue's route extractor
(read from the raw bytes, never a full parse), venue chatter (acks,
heartbeats, errors) to ``{prefix}.{venue}.control.shard-{N}``, and None for
what cannot be routed (the publisher sends it to ``{prefix}.{venue}.unrouted``
and counts it).  A venue whose array frames can hold events of several
routes also gives a fan-out function: such a frame goes out as one message
per event, each to its own subject (:mod:`flusher.publisher.split`).
"""
from __future__ import annotations

import collections
from typing import Callable, NamedTuple

from ring.frame import FrameType

SubjectFn = Callable[[bytes], "str | None"]
FanoutFn = Callable[[bytes], "list[tuple[str, bytes]] | None"]


def _valid_subject(b: bytes) -> bool:
    """A publishable subject: non-empty tokens, no whitespace or wildcards."""
    if not b or len(b) > 1024 or any(c in b for c in (b" ", b"\t", b"\r", b"\n", b"*", b">")):
        return False
    return all(b.split(b"."))


_CONTROL = int(FrameType.CONTROL)


class SubjectRouter:
    """One shard's subjects as bytes: a frame's (:meth:`of`), an event's of a
    split frame (:meth:`encode`), with the encoded data subjects cached.

    Owns the cache; counts into the publisher's ``stats``: ``unrouted``
    (no route, or a subject NATS would refuse) and ``bad_subject`` (the latter).

    Args:
        subject_fn: the caller's raw payload -> subject or None.
        control, unrouted: the shard's control subject and the venue's unrouted one.
        stats: the publisher's counters.
    """

    def __init__(self, subject_fn: SubjectFn, control: bytes, unrouted: bytes,
                 stats: collections.Counter[str]) -> None:
        self.subject_fn = subject_fn
        self.control, self.unrouted = control, unrouted
        self.stats = stats
        self._cache: dict[str, bytes] = {}

    def of(self, typ: int, payload: bytes) -> bytes:
        """The subject of a whole frame (control frames: the control subject)."""
        if typ == _CONTROL:
            return self.control
        try:
            s = self.subject_fn(payload)
        except Exception:  # noqa: BLE001 - a malformed frame must not stop the publisher
            s = None
        if s is None:
            self.stats["unrouted"] += 1
            return self.unrouted
        return self.encode(s)

    def encode(self, s: str) -> bytes:
        """A routed subject as bytes: a cache hit (the hot path), or a new
        subject checked once."""
        b = self._cache.get(s)
        if b is None:
            b = self._new(s)
        if b == self.unrouted:
            self.stats["unrouted"] += 1
        return b

    def _new(self, s: str) -> bytes:
        """Encode and cache a subject; one NATS would refuse -> unrouted (counted)."""
        if len(self._cache) > 1 << 16:
            self._cache.clear()
        b = s.encode()
        if not _valid_subject(b):
            self.stats["bad_subject"] += 1
            b = self.unrouted
        self._cache[s] = b
        return b


class Routing(NamedTuple):
    """What the publisher is told about a venue's frames by its caller.

    flusher/ sits below the venues (capture/venues/), so it never imports
    them: the capture-level entry (``python -m capture.publish``) builds this
    from the venue registry and hands it down.
    """

    #: raw payload -> subject, or None (-> ``{prefix}.{venue}.unrouted``)
    subject_fn: SubjectFn
    #: raw payload -> the exchange's own timestamp (ns), for the lag metric;
    #: None: no lag metric
    exchange_ts: Callable[[bytes], "int | None"] | None = None
    #: raw payload that opens with ``[`` -> ``[(subject, event bytes), ...]``
    #: when the frame holds events of several routes (each is then published
    #: to its own subject: see :mod:`flusher.publisher.split`), or None (the
    #: frame is one message, routed by ``subject_fn``).  None here: the
    #: venue's frames never split, and no frame pays the check.
    fanout_fn: FanoutFn | None = None


#: (prefix, venue, shard) -> Routing; what a caller gives ``publish.main``.
RoutingFactory = Callable[[str, str, int], Routing]


def test_subject_fn(prefix: str, venue: str) -> SubjectFn:
    """Subject from the payload's first bytes ``<channel>.<symbol>|...``; for
    tests and benchmarks that do not want a venue's message shapes."""
    cache: dict[bytes, str | None] = {}

    def subject(raw: bytes) -> str | None:
        head, sep, _ = raw[:96].partition(b"|")
        if not sep:
            return None
        s = cache.get(head, False)
        if s is False:
            if len(cache) > 1 << 16:
                cache.clear()
            s = cache[head] = (f"{prefix}.{venue}.{head.decode(errors='replace')}"
                               if head.count(b".") == 1 else None)
        return s
    return subject


def test_routing(prefix: str, venue: str, shard: int) -> Routing:
    """:func:`test_subject_fn` as a :data:`RoutingFactory` (no lag metric)."""
    return Routing(test_subject_fn(prefix, venue))
