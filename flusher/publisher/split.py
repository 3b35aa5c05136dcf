"""Frames published as several messages: the Msg-Id rule and the pipeline keys.

Most frames are one message: ``Nats-Msg-Id: <ring id hex>:<seq>`` on the
frame's one subject.  A frame that holds events of several routes (a venue's
array frame spanning several markets, e.g. Polymarket's initial dump of
books) is split by the caller's routing (:class:`.routing.Routing`
``fanout_fn``) into k (subject, event bytes) pairs and published as k
messages::

    Nats-Msg-Id: <ring id hex>:<seq>:<j>       j = 1..k, the event's place in the frame
    Capture-Part: <j>/<k>

with the frame's ``Capture-Seq``, ``Capture-Recv-Ns`` and ``Capture-Shard``.
The ids are deterministic (the split of given bytes is), so a resend after
an ack timeout, a reconnect or a crash de-duplicates part by part; the ring
cursor moves past the frame only when all k are acknowledged (only the last
part carries the commit token, and the pipeline commits in order).

Pipeline keys.  The ack pipeline keys frames in flight by an integer that is
also its reply subject's token (``<inbox>.<key>.<attempt>``).  A whole frame's
key is its sequence; part j of frame ``seq`` gets :func:`part_key`, a number
above every ring sequence (those are 64-bit), so keys never collide and the
pipeline's fast ack path (digits only) is unchanged.
"""
from __future__ import annotations

import collections
import logging
from typing import Any, Callable

from common.log import Throttle, event as log_event
from flusher.publisher.pipeline import AckPipeline
from flusher.publisher.routing import FanoutFn, SubjectRouter

log = logging.getLogger("capture.publisher")
_throttle = Throttle()      # split_too_many is said per frame: a storm of them is capped

#: Bits of a part key that hold the part number (so at most 2**20 - 1 events per frame).
PART_BITS = 20
#: The most events one frame may be split into; a frame with more is published whole.
MAX_PARTS = (1 << PART_BITS) - 1
# Above every 64-bit ring sequence shifted left by PART_BITS.
_PART_BASE = 1 << (64 + PART_BITS)

#: Header block of one part; the ring id and shard are filled in once per ring
#: (SplitPublisher.bind_ring), then seq, j, seq, recv ns, j, k per part.
PART_HDR_FMT = (b"NATS/1.0\r\nNats-Msg-Id: %s:%d:%d\r\nCapture-Seq: %d\r\nCapture-Recv-Ns: %d\r\n"
                b"Capture-Shard: %d\r\nCapture-Part: %d/%d\r\n\r\n")


#: (seq, subject, body, part "j/k") -> the (subject, body) to publish: the
#: publisher's size check (an oversize message becomes a notice).
FitFn = Callable[[int, bytes, bytes, str], "tuple[bytes, bytes]"]


def part_key(seq: int, part: int) -> int:
    """The pipeline key of event ``part`` (1-based) of frame ``seq``."""
    return _PART_BASE | (seq << PART_BITS) | part


def key_seq(key: int) -> int:
    """The ring sequence a pipeline key belongs to (a whole frame's key is its seq)."""
    return key if key < _PART_BASE else (key ^ _PART_BASE) >> PART_BITS


def key_of_msg_id(rest: str) -> int | None:
    """The pipeline key named by the part of a Msg-Id after ``<ring id hex>:``
    (``<seq>`` or ``<seq>:<j>``), or None for anything else."""
    s, sep, j = rest.partition(":")
    if not s.isdigit() or (sep and not j.isdigit()):
        return None
    seq = int(s)
    if not sep:
        return seq
    part = int(j)
    if not 1 <= part <= MAX_PARTS or seq >= 1 << 64:
        return None
    return part_key(seq, part)


class SplitPublisher:
    """Publishing a frame as its k events (see the module docstring).

    Owns the per-ring part header template (:meth:`bind_ring`).  Is given,
    not the publisher, but what it uses: the routing's fan-out, the shard's
    subjects, the publisher's counters, its size check (``fit``: a message
    too large for the server becomes a notice) and the read-back's
    ``already_stored`` (a part found in the stream after a crash).

    Args:
        fanout_fn: raw array payload -> its events' (subject, bytes), or None.
        shard: written in every part's header.
        router: the shard's subjects (:class:`.routing.SubjectRouter`).
        stats: the publisher's counters.
        fit: (seq, subject, body, part) -> (subject, body) to publish.
        already_stored: pipeline key -> True if the stream holds it (and
            it is forgotten: it is met once).
    """

    def __init__(self, fanout_fn: FanoutFn, *, shard: int, router: SubjectRouter,
                 stats: collections.Counter[str], fit: FitFn,
                 already_stored: Callable[[int], bool]) -> None:
        self.fanout_fn = fanout_fn
        self.shard = shard
        self._router = router
        self.stats = stats
        self._fit = fit
        self._already_stored = already_stored
        self._hdr_fmt = PART_HDR_FMT

    def bind_ring(self, ring_hex: bytes) -> None:
        """Parts from here on are of the ring ``ring_hex`` (its id in hex):
        the header template with the ring id and shard filled in."""
        self._hdr_fmt = PART_HDR_FMT.replace(b"%s", ring_hex, 1).replace(
            b"Capture-Shard: %d", b"Capture-Shard: %d" % self.shard)

    def publish(self, pipe: AckPipeline, seq: int, ts: int, payload: bytes, commit: Any) -> bool:
        """Publish an array frame as one message per event when the routing
        splits it (False: it does not; the caller publishes it whole).

        Part j of k: Msg-Id ``<ring id>:<seq>:<j>``, header ``Capture-Part:
        j/k``.  Only the last part carries the commit token, and the pipeline
        commits in submission order, so the cursor passes ``seq`` only when
        all k are acknowledged.  Parts a read-back found stored (a crash
        between the parts' acks) are accounted without a publish.
        The k messages enter the window together (it may overfill by k - 1)."""
        try:
            parts = self.fanout_fn(payload)
        except Exception:  # noqa: BLE001 - a venue parser must never stop publishing
            self.stats["split_failed"] += 1
            parts = None
        if not parts or len(parts) < 2:
            return False
        k = len(parts)
        if k > MAX_PARTS:
            self.stats["split_too_many"] += 1
            ok, suppressed = _throttle.allow("split_too_many")
            if ok:      # one per frame: a storm of them is capped
                log_event(log, "split_too_many", logging.WARNING, seq=seq, events=k, max_parts=MAX_PARTS,
                          action="published whole", **({"suppressed": suppressed} if suppressed else {}))
            return False
        stored, fit, encode, fmt = self._already_stored, self._fit, self._router.encode, self._hdr_fmt
        sent = 0
        for j, (subj, body) in enumerate(parts, 1):
            key = part_key(seq, j)
            c = commit if j == k else None
            if stored(key):
                self.stats["already_stored"] += 1
                pipe.ack_local(key, commit=c)
                continue
            subject, body = fit(seq, encode(subj), body, f"{j}/{k}")
            pipe.put(key, subject, body, fmt % (seq, j, seq, ts, j, k), c, ts)
            sent += 1
        self.stats["published"] += sent
        self.stats["split_frames"] += 1
        self.stats["split_events"] += k
        return True
